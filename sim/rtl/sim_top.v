// Simulation top: shiftbook_core + behavioural external memory (sim only).
//
// The cocotb test (sim/rtl/cocotb_core.py) drives clk, rst, start and dump and otherwise only
// waits for done / error / fault; everything per-cycle happens here in Verilog:
//   - run_cycles counts clock edges from the one that samples start to the first one that
//     samples done or error (inclusive);
//   - every cycle with mark_valid high appends "id cycles run_cycles" to the file named by
//     +marks_file=FILE (the core's `cycles` port, then the harness's own count).
`default_nettype none

module shiftbook_sim_top #(
    parameter integer BUS_BYTES = 8,
    parameter integer LATENCY = 4,
    parameter integer WORDS = 1024
) (
    input  wire        clk,
    input  wire        rst,
    input  wire        start,
    input  wire        dump,
    output wire        busy,
    output wire        done,
    output wire        error,
    output wire        mark_valid,
    output wire [15:0] mark_id,
    output wire [47:0] cycles,
    output reg  [63:0] run_cycles,
    output reg  [31:0] mark_count,
    output wire        fault,
    output wire [27:0] fault_addr,
    output wire [63:0] mem_reads,
    output wire [63:0] mem_writes
);
    localparam integer W = 8 * BUS_BYTES;

    wire          cmd_valid;
    wire          cmd_ready;
    wire [27:0]   cmd_addr;
    wire          cmd_we;
    wire [W-1:0]  cmd_wdata;
    wire          rsp_valid;
    wire [W-1:0]  rsp_data;

    shiftbook_core core (
        .clk(clk),
        .rst(rst),
        .start(start),
        .busy(busy),
        .done(done),
        .error(error),
        .cmd_valid(cmd_valid),
        .cmd_ready(cmd_ready),
        .cmd_addr(cmd_addr),
        .cmd_we(cmd_we),
        .cmd_wdata(cmd_wdata),
        .rsp_valid(rsp_valid),
        .rsp_data(rsp_data),
        .mark_valid(mark_valid),
        .mark_id(mark_id),
        .cycles(cycles)
    );

    shiftbook_extmem #(
        .BUS_BYTES(BUS_BYTES),
        .LATENCY(LATENCY),
        .WORDS(WORDS),
        .ADDR_BITS(28)
    ) extmem (
        .clk(clk),
        .rst(rst),
        .cmd_valid(cmd_valid),
        .cmd_ready(cmd_ready),
        .cmd_addr(cmd_addr),
        .cmd_we(cmd_we),
        .cmd_wdata(cmd_wdata),
        .rsp_valid(rsp_valid),
        .rsp_data(rsp_data),
        .dump(dump),
        .fault(fault),
        .fault_addr(fault_addr),
        .reads(mem_reads),
        .writes(mem_writes)
    );

    // ---- cycle count of the run
    reg running;
    initial begin
        running = 1'b0;
        run_cycles = 64'd0;
        mark_count = 32'd0;
    end
    always @(posedge clk) begin
        if (rst) begin
            running <= 1'b0;
            run_cycles <= 64'd0;
        end else if (start) begin
            running <= 1'b1;
            run_cycles <= 64'd0;
        end else if (running) begin
            run_cycles <= run_cycles + 64'd1;
            if (done || error) running <= 1'b0;
        end
    end

    // ---- MARK log
    reg [8*1024-1:0] marks_file;
    integer          marks_fd;
    initial begin
        marks_fd = 0;
        if ($value$plusargs("marks_file=%s", marks_file)) marks_fd = $fopen(marks_file, "w");
    end
    always @(posedge clk) begin
        if (!rst && mark_valid) begin
            mark_count <= mark_count + 32'd1;
            if (marks_fd != 0) begin
                $fwrite(marks_fd, "%0d %0d %0d\n", mark_id, cycles, run_cycles);
                $fflush(marks_fd);
            end
        end
    end
endmodule

`default_nettype wire
