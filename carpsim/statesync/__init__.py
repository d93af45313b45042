"""carpsim.statesync"""
