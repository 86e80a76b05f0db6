// Behavioural external memory for simulation only (never synthesised).
//
// Word-addressed, BUS_BYTES bytes per word, WORDS words. One request per cycle:
// a request is accepted at a rising clock edge where cmd_valid & cmd_ready. A write
// updates the array at that edge; a read returns the word (as it is after every earlier
// request) on rsp_valid/rsp_data, registered, so that the requester samples it exactly
// LATENCY edges after the accepting edge (LATENCY=1 behaves like a synchronous RAM).
// Responses come back in order; the pipeline never stalls.
//
// Run-time plusargs (read at time 0):
//   +image=FILE       $readmemh FILE into the array (one hex word per line, word 0 first)
//   +image_words=N    words in FILE (the lower bound of what `dump` writes back)
//   +dump_file=FILE   where a rising `dump` writes the array with $writememh: words
//                     [0, max(image_words, highest written word + 1))
//   +stall_seed=S     S != 0: cmd_ready is low on pseudo-random cycles (32-bit xorshift
//                     seeded with S), independent of cmd_valid
//   +stall_pct=P      percentage of stalled cycles when stall_seed is given (default 25)
//
// `fault` rises (and stays high) when a request addresses a word >= WORDS; `fault_addr`
// holds the first such address. `reads`/`writes` count accepted requests.
`default_nettype none

module shiftbook_extmem #(
    parameter integer BUS_BYTES = 8,
    parameter integer LATENCY = 4,
    parameter integer WORDS = 1024,
    parameter integer ADDR_BITS = 28
) (
    input  wire                     clk,
    input  wire                     rst,
    input  wire                     cmd_valid,
    output wire                     cmd_ready,
    input  wire [ADDR_BITS-1:0]     cmd_addr,
    input  wire                     cmd_we,
    input  wire [8*BUS_BYTES-1:0]   cmd_wdata,
    output wire                     rsp_valid,
    output wire [8*BUS_BYTES-1:0]   rsp_data,
    input  wire                     dump,
    output reg                      fault,
    output reg  [ADDR_BITS-1:0]     fault_addr,
    output reg  [63:0]              reads,
    output reg  [63:0]              writes
);
    localparam integer W = 8 * BUS_BYTES;

    reg [W-1:0] mem [0:WORDS-1];

    reg [8*1024-1:0] image_file;
    reg [8*1024-1:0] dump_file;
    reg              have_dump;
    integer          image_words;
    integer          stall_pct;
    reg [31:0]       stall_seed;
    reg [31:0]       lfsr;
    reg [31:0]       lfsr_next;
    reg              stalling;
    integer          high_water;  // one past the highest word written
    reg              dump_q;
    integer          dump_end;

    initial begin
        fault = 1'b0;
        fault_addr = {ADDR_BITS{1'b0}};
        reads = 64'd0;
        writes = 64'd0;
        high_water = 0;
        dump_q = 1'b0;
        image_words = 0;
        stall_pct = 25;
        stall_seed = 32'd0;
        have_dump = 1'b0;
        if ($value$plusargs("image=%s", image_file)) begin
            $readmemh(image_file, mem);
        end
        if (!$value$plusargs("image_words=%d", image_words)) image_words = 0;
        if ($value$plusargs("dump_file=%s", dump_file)) have_dump = 1'b1;
        if (!$value$plusargs("stall_seed=%d", stall_seed)) stall_seed = 32'd0;
        if (!$value$plusargs("stall_pct=%d", stall_pct)) stall_pct = 25;
        lfsr = stall_seed;
        stalling = 1'b0;
    end

    // ---- back-pressure: 32-bit xorshift, one step per cycle
    always @(*) begin
        lfsr_next = lfsr ^ (lfsr << 13);
        lfsr_next = lfsr_next ^ (lfsr_next >> 17);
        lfsr_next = lfsr_next ^ (lfsr_next << 5);
    end

    always @(posedge clk) begin
        if (stall_seed != 32'd0) begin
            lfsr <= lfsr_next;
            stalling <= ((lfsr_next >> 8) % 100) < stall_pct;
        end
    end

    assign cmd_ready = !stalling;

    // ---- request side and response pipeline
    wire accept = cmd_valid && cmd_ready;
    wire in_range = cmd_addr < WORDS;

    reg         pipe_valid [0:LATENCY-1];
    reg [W-1:0] pipe_data  [0:LATENCY-1];

    integer i;
    initial begin
        for (i = 0; i < LATENCY; i = i + 1) begin
            pipe_valid[i] = 1'b0;
            pipe_data[i] = {W{1'b0}};
        end
    end

    always @(posedge clk) begin
        pipe_valid[0] <= accept && !cmd_we;
        pipe_data[0] <= (accept && !cmd_we && in_range) ? mem[cmd_addr] : {W{1'b0}};
        for (i = 1; i < LATENCY; i = i + 1) begin
            pipe_valid[i] <= pipe_valid[i-1];
            pipe_data[i] <= pipe_data[i-1];
        end
        if (accept) begin
            if (!in_range) begin
                if (!fault) fault_addr <= cmd_addr;
                fault <= 1'b1;
            end else if (cmd_we) begin
                mem[cmd_addr] <= cmd_wdata;
                if ({4'd0, cmd_addr} >= high_water) high_water <= {4'd0, cmd_addr} + 1;
            end
            if (cmd_we) writes <= writes + 64'd1;
            else reads <= reads + 64'd1;
        end
        if (rst) begin
            for (i = 0; i < LATENCY; i = i + 1) pipe_valid[i] <= 1'b0;
        end
    end

    assign rsp_valid = pipe_valid[LATENCY-1];
    assign rsp_data = pipe_data[LATENCY-1];

    // ---- dump the image on a rising `dump`
    always @(posedge clk) begin
        dump_q <= dump;
        if (dump && !dump_q && have_dump) begin
            dump_end = (high_water > image_words) ? high_water : image_words;
            if (dump_end < 1) dump_end = 1;
            $writememh(dump_file, mem, 0, dump_end - 1);
        end
    end
endmodule

`default_nettype wire
