// shiftbook's main() for the Verilator + cocotb models (sim/rtl/verilator_cache.py builds every
// model with it instead of cocotb's share/lib/verilator/verilator.cpp).
//
// It drives the same VPI event loop as cocotb's main (cocotb needs exactly that sequence of
// callbacks), and adds two things:
//   - vl_finish() without Verilator's "- :0: Verilog $finish" line (cocotb ends every run
//     with vpi_control(vpiFinish); the line is noise in every command's output). The build
//     defines VL_USER_FINISH so that verilated.cpp leaves vl_finish to us.
//   - a waveform window: with --trace, time steps are written to the FST only between two
//     MARKs of the core (the models of shiftbook_sim_top, built with -DSHIFTBOOK_MARKS):
//       +waves_from_mark=P   start after the first MARK P (absent or -1: from time 0)
//       +waves_to_mark=M     stop after the first MARK M (absent or -1: to the end)
//       +waves_window=FILE   write "from_time to_time from_cycle to_cycle" there
//     Time is in simulator precision units (ps); cycles are the core's `cycles` port.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "Vtop.h"
#include "verilated.h"
#include "verilated_vpi.h"

#if VM_TRACE
#include <verilated_fst_c.h>
#endif

extern "C" void vlog_startup_routines_bootstrap(void);

static vluint64_t main_time = 0;

double sc_time_stamp() { return static_cast<double>(main_time); }

void vl_finish(const char* filename, int linenum, const char* hier) {
    (void)filename;
    (void)linenum;
    (void)hier;
    Verilated::threadContextp()->gotFinish(true);
}

namespace {

#if VM_TRACE
VerilatedFstC* trace = nullptr;
#endif

// Which time steps go into the trace file.
struct Window {
    long from_mark = -1;
    long to_mark = -1;
    bool on = false;      // currently writing
    bool done = false;    // past the window
    bool prev_mark = false;
    vluint64_t from_time = 0, to_time = 0, from_cycle = 0, to_cycle = 0;
    std::string file;
};

long plusarg_long(const char* name, long dflt) {
    const std::string match = Verilated::commandArgsPlusMatch(name);
    const std::string prefix = std::string("+") + name;
    if (match.size() <= prefix.size()) return dflt;
    return std::strtol(match.c_str() + prefix.size(), nullptr, 10);
}

std::string plusarg_str(const char* name) {
    const std::string match = Verilated::commandArgsPlusMatch(name);
    const std::string prefix = std::string("+") + name;
    return match.size() > prefix.size() ? match.substr(prefix.size()) : std::string();
}

vluint64_t core_cycles(Vtop* top) {
#ifdef SHIFTBOOK_MARKS
    return static_cast<vluint64_t>(top->cycles);
#else
    (void)top;
    return 0;
#endif
}

// Called once per time step, after the design settled: decide whether this step is traced.
bool window_step(Window& w, Vtop* top) {
    if (w.done) return false;
#ifdef SHIFTBOOK_MARKS
    const bool mark = top->mark_valid && !top->rst;
    const bool rise = mark && !w.prev_mark;
    w.prev_mark = mark;
    const long id = static_cast<long>(top->mark_id);
#else
    const bool rise = false;
    const long id = -1;
#endif
    if (!w.on) {
        if (w.from_mark >= 0 && !(rise && id == w.from_mark)) return false;
        w.on = true;
        w.from_time = main_time;
        w.from_cycle = core_cycles(top);
        return true;
    }
    w.to_time = main_time;
    w.to_cycle = core_cycles(top);
    if (w.to_mark >= 0 && rise && id == w.to_mark) w.done = true;
    return true;
}

void write_window(const Window& w) {
    if (w.file.empty() || !w.on) return;
    if (FILE* f = std::fopen(w.file.c_str(), "w")) {
        std::fprintf(f, "%llu %llu %llu %llu\n", (unsigned long long)w.from_time,
                     (unsigned long long)w.to_time, (unsigned long long)w.from_cycle,
                     (unsigned long long)w.to_cycle);
        std::fclose(f);
    }
}

void settle() {
    while (VerilatedVpi::callValueCbs()) {
    }
}

void wrap_up() {
    VerilatedVpi::callCbs(cbEndOfSimulation);
#if VM_TRACE
    if (trace) trace->close();
#endif
}

}  // namespace

int main(int argc, char** argv) {
    bool trace_on = false;
    const char* trace_file = "dump.fst";
    for (int i = 1; i < argc; i++) {
        const std::string arg = argv[i];
        if (arg == "--trace") {
            trace_on = true;
        } else if (arg == "--trace-file" && i + 1 < argc) {
            trace_file = argv[++i];
        }
    }
    Verilated::commandArgs(argc, argv);
    std::unique_ptr<Vtop> top(new Vtop(""));
    Verilated::fatalOnVpiError(false);  // system tasks are reached through VPI

    Window win;
    win.from_mark = plusarg_long("waves_from_mark=", -1);
    win.to_mark = plusarg_long("waves_to_mark=", -1);
    win.file = plusarg_str("waves_window=");
#if VM_TRACE
    Verilated::traceEverOn(true);
    if (trace_on) {
        trace = new VerilatedFstC;
        top->trace(trace, 99);
        trace->open(trace_file);
    }
#else
    if (trace_on) {
        std::fprintf(stderr, "Error: --trace needs a model built with waveforms\n");
        return 1;
    }
#endif

    vlog_startup_routines_bootstrap();
    Verilated::addExitCb([](void*) { wrap_up(); }, nullptr);
    VerilatedVpi::callCbs(cbStartOfSimulation);
    settle();

    const vluint64_t none = ~static_cast<vluint64_t>(0);
    while (!Verilated::gotFinish()) {
        do {
            do {
                top->eval_step();
                VerilatedVpi::clearEvalNeeded();
                VerilatedVpi::doInertialPuts();
                settle();
            } while (VerilatedVpi::evalNeeded());
            VerilatedVpi::callCbs(cbReadWriteSynch);
            VerilatedVpi::doInertialPuts();
            settle();
        } while (VerilatedVpi::evalNeeded());
        top->eval_end_step();
        VerilatedVpi::callCbs(cbReadOnlySynch);
#if VM_TRACE
        if (trace && window_step(win, top.get())) trace->dump(main_time);
#endif
        const vluint64_t next_cb = VerilatedVpi::cbNextDeadline();
        const vluint64_t next_ev = top->eventsPending() ? top->nextTimeSlot() : none;
        const vluint64_t next = next_cb < next_ev ? next_cb : next_ev;
        if (next == none) break;
        main_time = next;
        VerilatedVpi::callCbs(cbNextSimTime);
        settle();
        VerilatedVpi::callTimedCbs();
        settle();
    }
    top->final();
    wrap_up();
    write_window(win);
#if VM_TRACE
    delete trace;
    trace = nullptr;
#endif
    return Verilated::threadContextp()->errorCount() > 0 ? 1 : 0;
}
