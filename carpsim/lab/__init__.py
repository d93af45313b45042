"""carpsim.lab"""
