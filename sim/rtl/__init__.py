"""RTL simulation: generated Verilog under Verilator, driven by cocotb."""
