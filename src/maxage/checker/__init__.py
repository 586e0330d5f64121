"""The consistency checker: workload, history, checks of P0-P7, faults and mutants, monitor."""
