"""carpsim.runtime"""
