"""carpsim.sim"""
