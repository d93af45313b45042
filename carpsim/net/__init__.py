"""carpsim.net"""
