// Stand-in for the real accelerator: the same ports as `shiftbook_core` (docs/isa.md, "Core
// ports"), a tiny subset of the ISA. It exists only to test the RTL harness on its own.
//
// - fetches 128-bit instructions from word 0 (16 / BUS_BYTES words each; BUS_BYTES <= 16);
// - NOP, SET, COMPUTE, SYNC: no effect;
// - MARK: one-cycle mark_valid pulse with mark_id;
// - END: done (held until the next start);
// - LOAD (any buf): the 2-D walk of docs/isa.md from external memory into one 256-word
//   scratch buffer (buffer word addresses modulo 256); read requests are pipelined and
//   responses collected in order;
// - STORE (any buf): the 2-D walk from the scratch buffer back to external memory;
// - opcodes 8..15: error.
// `cycles` counts clock cycles while busy since the last start.
`default_nettype none

module shiftbook_core #(
    parameter integer BUS_BYTES = 8
) (
    input  wire                    clk,
    input  wire                    rst,
    input  wire                    start,
    output wire                    busy,
    output reg                     done,
    output reg                     error,
    output reg                     cmd_valid,
    input  wire                    cmd_ready,
    output reg  [27:0]             cmd_addr,
    output reg                     cmd_we,
    output reg  [8*BUS_BYTES-1:0]  cmd_wdata,
    input  wire                    rsp_valid,
    input  wire [8*BUS_BYTES-1:0]  rsp_data,
    output reg                     mark_valid,
    output reg  [15:0]             mark_id,
    output reg  [47:0]             cycles
);
    localparam integer W = 8 * BUS_BYTES;
    localparam integer WPI = 16 / BUS_BYTES;

    localparam [2:0] S_IDLE = 3'd0, S_FETCH = 3'd1, S_EXEC = 3'd2, S_LOAD = 3'd3,
                     S_STORE = 3'd4;

    reg [2:0]   state;
    reg [27:0]  pc;
    reg [127:0] insn;
    reg [7:0]   f_req;
    reg [7:0]   f_rsp;

    reg [W-1:0] scratch [0:255];

    // 2-D walkers: requests (ext side) and buffer side
    reg [27:0]  q_row_ext;   // ext address of the current request run
    reg [15:0]  q_w;
    reg [15:0]  q_r;
    reg [21:0]  b_row;       // buffer address of the current buffer-side run
    reg [15:0]  b_w;
    reg [15:0]  b_r;
    reg [15:0]  n_words;
    reg [15:0]  n_runs;
    reg [19:0]  ext_stride;
    reg [17:0]  buf_stride;
    reg         q_done;

    wire [255:0] rsp_wide = {{(256 - W){1'b0}}, rsp_data};
    wire [3:0]   opcode = insn[3:0];

    assign busy = state != S_IDLE;

    // request outputs (combinational from the state)
    always @(*) begin
        cmd_valid = 1'b0;
        cmd_addr = 28'd0;
        cmd_we = 1'b0;
        cmd_wdata = {W{1'b0}};
        case (state)
            S_FETCH: begin
                cmd_valid = f_req < WPI;
                cmd_addr = pc + {20'd0, f_req};
            end
            S_LOAD: begin
                cmd_valid = !q_done;
                cmd_addr = q_row_ext + {12'd0, q_w};
            end
            S_STORE: begin
                cmd_valid = 1'b1;
                cmd_we = 1'b1;
                cmd_addr = q_row_ext + {12'd0, q_w};
                cmd_wdata = scratch[b_row[7:0] + b_w[7:0]];
            end
            default: ;
        endcase
    end

    wire accept = cmd_valid && cmd_ready;
    wire q_last = (q_w + 16'd1 == n_words) && (q_r + 16'd1 == n_runs);
    wire b_last = (b_w + 16'd1 == n_words) && (b_r + 16'd1 == n_runs);

    always @(posedge clk) begin
        mark_valid <= 1'b0;
        if (busy) cycles <= cycles + 48'd1;
        case (state)
            S_IDLE: ;
            S_FETCH: begin
                if (accept) f_req <= f_req + 8'd1;
                if (rsp_valid) begin
                    insn <= (insn >> W) | (rsp_wide[127:0] << (128 - W));
                    f_rsp <= f_rsp + 8'd1;
                    if (f_rsp + 8'd1 == WPI) begin
                        state <= S_EXEC;
                        pc <= pc + WPI;
                    end
                end
            end
            S_EXEC: begin
                f_req <= 8'd0;
                f_rsp <= 8'd0;
                state <= S_FETCH;
                q_row_ext <= insn[35:8];
                b_row <= insn[57:36];
                n_words <= insn[73:58];
                n_runs <= insn[89:74];
                ext_stride <= insn[109:90];
                buf_stride <= insn[127:110];
                q_w <= 16'd0;
                q_r <= 16'd0;
                b_w <= 16'd0;
                b_r <= 16'd0;
                q_done <= 1'b0;
                case (opcode)
                    4'd0, 4'd1, 4'd4, 4'd5: ;
                    4'd2: if (insn[73:58] != 16'd0 && insn[89:74] != 16'd0) state <= S_LOAD;
                    4'd3: if (insn[73:58] != 16'd0 && insn[89:74] != 16'd0) state <= S_STORE;
                    4'd6: begin
                        mark_valid <= 1'b1;
                        mark_id <= insn[19:4];
                    end
                    4'd7: begin
                        done <= 1'b1;
                        state <= S_IDLE;
                    end
                    default: begin
                        error <= 1'b1;
                        state <= S_IDLE;
                    end
                endcase
            end
            S_LOAD, S_STORE: begin
                if (accept) begin
                    if (q_last) q_done <= 1'b1;
                    if (q_w + 16'd1 == n_words) begin
                        q_w <= 16'd0;
                        q_r <= q_r + 16'd1;
                        q_row_ext <= q_row_ext + {8'd0, ext_stride};
                    end else begin
                        q_w <= q_w + 16'd1;
                    end
                end
                // buffer side: load responses arrive in order; a store reads as it issues
                if ((state == S_LOAD && rsp_valid) || (state == S_STORE && accept)) begin
                    if (state == S_LOAD) scratch[b_row[7:0] + b_w[7:0]] <= rsp_data;
                    if (b_last) state <= S_FETCH;
                    if (b_w + 16'd1 == n_words) begin
                        b_w <= 16'd0;
                        b_r <= b_r + 16'd1;
                        b_row <= b_row + {4'd0, buf_stride};
                    end else begin
                        b_w <= b_w + 16'd1;
                    end
                end
            end
            default: state <= S_IDLE;
        endcase
        if (start) begin
            state <= S_FETCH;
            pc <= 28'd0;
            f_req <= 8'd0;
            f_rsp <= 8'd0;
            done <= 1'b0;
            error <= 1'b0;
            cycles <= 48'd0;
        end
        if (rst) begin
            state <= S_IDLE;
            done <= 1'b0;
            error <= 1'b0;
            mark_valid <= 1'b0;
            mark_id <= 16'd0;
            cycles <= 48'd0;
            pc <= 28'd0;
        end
    end
endmodule

`default_nettype wire
