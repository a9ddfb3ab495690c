// The fault matrix (issue #12): each fault at each phase of a precopy and a postcopy
// migration of the test guest (verify mode, with a virtio-blk disk), injected by a man
// in the middle (section_proxy.hpp) or by killing one side. After each, exactly one
// side may run the guest, with its ticks going on and no corrupt page; or the failure
// is reported and the source holds the guest paused and intact, and `cont` resumes it;
// or the guest is lost because the side that ran it (or the source that held the
// pages a postcopy destination lacks) was killed. A postcopy whose connection broke
// pauses both sides; the test recovers it (migrate-recover, migrate --resume) and
// the destination must then run the guest. Never two. Each survivor ends on SIGTERM
// within 5 s.
//
// Phases are sections of the stream: setup (the header), a precopy round (its first
// RAM batch), stop-and-copy (the first vCPU state), go, postcopy (the first pushed RAM
// batch after go) and completion (precopy: resumed; postcopy: postcopy-done; both on the
// way back). Each
// side's waits are cut short (x-*-timeout 3 s), so a stall ends in seconds.
//
// The table of outcomes goes to docs/reliability.md (FERRY_RELIABILITY_MD overrides
// the path; scripts/test regenerates it with each run of the suite).
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "migration_helpers.hpp"
#include "process.hpp"
#include "section_proxy.hpp"

using namespace ferry;
using namespace ferry::test;
using namespace std::chrono_literals;

namespace {

enum class Fault { Cut, CutMidway, Stall, Flip, KillSource, KillDestination, StopSource, StopDestination };
// How long a SIGSTOPped side stays stopped (past each side's 3 s waits).
constexpr auto kStoppedFor = std::chrono::seconds(5);
enum class Phase { Setup, Round, StopAndCopy, Go, Postcopy, Completion };

const char* fault_name(Fault f) {
    switch (f) {
        case Fault::Cut: return "cut";
        case Fault::CutMidway: return "cut mid-section";
        case Fault::Stall: return "stall";
        case Fault::Flip: return "flip a byte";
        case Fault::KillSource: return "SIGKILL source";
        case Fault::KillDestination: return "SIGKILL destination";
        case Fault::StopSource: return "SIGSTOP source (5 s)";
        case Fault::StopDestination: return "SIGSTOP destination (5 s)";
    }
    return "?";
}

const char* phase_name(Phase p) {
    switch (p) {
        case Phase::Setup: return "setup";
        case Phase::Round: return "precopy round";
        case Phase::StopAndCopy: return "stop-and-copy";
        case Phase::Go: return "go";
        case Phase::Postcopy: return "postcopy";
        case Phase::Completion: return "completion";
    }
    return "?";
}

// Whether section `s` going `d` is where phase `p` is struck (`after_go`: Go passed).
// Completion: resumed in precopy, postcopy-done in postcopy.
bool at_phase(Phase p, SectionProxy::Dir d, const Section& s, bool after_go, bool postcopy) {
    using D = SectionProxy::Dir;
    switch (p) {
        case Phase::Setup: return d == D::ToDestination && s.kind == SectionKind::Header;
        case Phase::Round: return d == D::ToDestination && s.kind == SectionKind::RamBatch && !after_go;
        case Phase::StopAndCopy: return d == D::ToDestination && s.kind == SectionKind::VcpuState;
        case Phase::Go: return d == D::ToDestination && s.kind == SectionKind::Go;
        case Phase::Postcopy: return d == D::ToDestination && s.kind == SectionKind::RamBatch && after_go;
        case Phase::Completion:
            return d == D::ToSource && s.kind == (postcopy ? SectionKind::PostcopyDone : SectionKind::Resumed);
    }
    return false;
}

struct Row {
    std::string mode, phase, fault, outcome;
    bool ok;
};

std::vector<Row>& rows() {
    static std::vector<Row> r;
    return r;
}

std::optional<nlohmann::json> qmp_try_json(const std::string& qmp, const std::string& cmd, const std::string& args = "") {
    std::vector<std::string> argv{ferry_bin(), "qmp", "--timeout", "5", "--qmp", qmp, cmd};
    if (!args.empty()) argv.push_back(args);
    Process p(argv);
    if (p.wait_exit(15s) != 0) return std::nullopt;
    auto j = nlohmann::json::parse(p.out_text(), nullptr, false);
    if (j.is_discarded()) return std::nullopt;
    return j;
}

bool alive(Process& p) { return !p.wait_exit(0ms).has_value(); }

std::string mig_status(Process& p, const std::string& qmp) {
    if (!alive(p)) return "gone";
    auto j = qmp_try_json(qmp, "query-migrate");
    return j ? j->value("status", "none") : "no answer";
}

std::string run_state(Process& p, const std::string& qmp) {
    if (!alive(p)) return "gone";
    auto j = qmp_try_json(qmp, "query-status");
    return j ? j->value("status", "?") : "no answer";
}

// The guest runs in `p`: two new ticks, no corrupt page.
bool ticks_on(Process& p, std::string& why) {
    p.drain();
    int from = last_tick(p);
    for (int i = 0; i < 100; ++i) {
        p.drain(100ms);
        if (last_tick(p) >= from + 2) break;
    }
    if (last_tick(p) < from + 2) {
        why = fmt::format("ticks stopped at {}", last_tick(p));
        return false;
    }
    if (p.out_text().find("CORRUPT") != std::string::npos) {
        why = "a corrupt page";
        return false;
    }
    return true;
}

struct Disk {
    std::string path;
    explicit Disk(const std::string& name) {
        path = "/tmp/ferry-faults-" + std::to_string(::getpid()) + "-" + name + ".img";
        std::ofstream f(path, std::ios::binary | std::ios::trunc);
        f.seekp((1 << 20) - 1);
        f.put('\0');
    }
    ~Disk() { ::unlink(path.c_str()); }
};

constexpr const char* kShortWaits = R"({"x-setup-timeout": 3000, "x-stall-timeout": 3000, "x-switchover-timeout": 3000})";

Row run_case(const std::string& mode, Phase phase, Fault fault) {
    Row row{mode, phase_name(phase), fault_name(fault), "", false};
    std::string name = fmt::format("{}-{}-{}", mode, static_cast<int>(phase), static_cast<int>(fault));
    Disk disk(name);
    auto q = sock("fm-src-" + name), dq = sock("fm-dst-" + name);
    Process src({ferry_bin(), "run", "--kernel", testguest_elf(), "--mem", "64M", "--qmp", q, "--disk", disk.path, "--cmdline",
                 "mode=verify wss=8M rate=1M"});
    REQUIRE(src.wait_line(std::regex("^guest: tick=1 "), kLong));
    // The destination listens only after its waits are cut short too.
    Process dst({ferry_bin(), "run", "--mem", "64M", "--disk", disk.path, "--incoming", "defer", "--qmp", dq});
    bool up = false;
    for (int i = 0; i < 100 && !up; ++i) {
        up = ::access(dq.c_str(), F_OK) == 0 && qmp_try_json(dq, "query-status").has_value();
        if (!up) std::this_thread::sleep_for(50ms);
    }
    INFO(dst.err());
    REQUIRE(up);
    REQUIRE(qmp_try_json(dq, "migrate-set-parameters", kShortWaits));
    int port = free_port();
    REQUIRE(qmp_try_json(dq, "migrate-incoming", fmt::format(R"({{"uri": "tcp:127.0.0.1:{}"}})", port)));
    REQUIRE(qmp_try_json(q, "migrate-set-parameters", kShortWaits));

    std::atomic<bool> struck{false}, after_go{false}, dst_resumed{false};
    std::atomic<pid_t> stopped{0};
    std::atomic<std::chrono::steady_clock::rep> stopped_at{0};
    auto stop = [&](pid_t pid) {
        stopped_at = std::chrono::steady_clock::now().time_since_epoch().count();
        stopped = pid;
        ::kill(pid, SIGSTOP);
        return SectionProxy::Action::Forward;
    };
    bool killed_src = false, killed_dst = false;
    SectionProxy proxy(static_cast<uint16_t>(port), [&](SectionProxy::Dir d, const Section& s) {
        using A = SectionProxy::Action;
        bool hit = !struck && at_phase(phase, d, s, after_go, mode == "postcopy");
        if (d == SectionProxy::Dir::ToDestination && s.kind == SectionKind::Go) after_go = true;
        if (d == SectionProxy::Dir::ToSource && s.kind == SectionKind::Resumed) dst_resumed = true;
        if (!hit) return A::Forward;
        struck = true;
        switch (fault) {
            case Fault::Cut: return A::Cut;
            case Fault::CutMidway: return A::CutMidway;
            case Fault::StopSource: return stop(src.pid());
            case Fault::StopDestination: return stop(dst.pid());
            case Fault::Stall: return A::Stall;
            case Fault::Flip: return A::Flip;
            case Fault::KillSource: ::kill(src.pid(), SIGKILL); return A::Forward;
            case Fault::KillDestination: ::kill(dst.pid(), SIGKILL); return A::Forward;
        }
        return A::Forward;
    });
    killed_src = fault == Fault::KillSource;
    killed_dst = fault == Fault::KillDestination;
    Process mig({ferry_bin(), "migrate", "--qmp", q, "--to", fmt::format("tcp:127.0.0.1:{}", proxy.port()), "--mode", mode});
    // A stopped side goes on after kStoppedFor (the other side has given up on it by then).
    auto cont_stopped = [&](bool now) {
        pid_t pid = stopped;
        auto since = std::chrono::steady_clock::time_point(std::chrono::steady_clock::duration(stopped_at.load()));
        if (pid && (now || std::chrono::steady_clock::now() - since >= kStoppedFor)) {
            ::kill(pid, SIGCONT);
            stopped = 0;
        }
    };
    std::optional<int> mig_rc;
    for (auto until = std::chrono::steady_clock::now() + kLong; !mig_rc && std::chrono::steady_clock::now() < until;) {
        mig_rc = mig.wait_exit(100ms);
        cont_stopped(false);
    }
    while (stopped) {
        cont_stopped(false);
        std::this_thread::sleep_for(100ms);
    }
    INFO("case " << mode << " / " << row.phase << " / " << row.fault << "\nmigrate: " << mig.out_text() << mig.err());
    CHECK(mig_rc.has_value());
    CHECK(struck);
    // Let both sides settle: the source's migration ends (each wait is 3 s at most), and
    // a destination that lost its source gives up.
    for (int i = 0; i < 100 && alive(src); ++i) {
        auto st = mig_status(src, q);
        if (st == "completed" || st == "failed" || st == "cancelled" || st == "postcopy-paused") break;
        std::this_thread::sleep_for(100ms);
    }
    for (int i = 0; i < 100 && alive(dst) && run_state(dst, dq) == "inmigrate" && fault != Fault::Stall; ++i)
        std::this_thread::sleep_for(100ms);
    // A postcopy whose connection broke pauses both sides: recover it, as an operator
    // would, straight to the destination (no man in the middle this time).
    std::string recovery;
    bool source_saw_it_run = false;  // the source refused to give a paused postcopy up
    for (int i = 0; i < 50 && mode == "postcopy" && alive(dst) && mig_status(dst, dq) == "postcopy-active"; ++i)
        std::this_thread::sleep_for(100ms);
    std::string s_mig = mig_status(src, q), d_mig = mig_status(dst, dq);
    if (s_mig == "postcopy-paused" && d_mig == "postcopy-paused") {
        int port = free_port();
        bool listening = qmp_try_json(dq, "migrate-recover", fmt::format(R"({{"uri": "tcp:127.0.0.1:{}"}})", port)).has_value();
        Process resume({ferry_bin(), "migrate", "--qmp", q, "--to", fmt::format("tcp:127.0.0.1:{}", port), "--resume"});
        auto rc = resume.wait_exit(kLong);
        for (int i = 0; i < 100 && alive(dst) && mig_status(dst, dq) != "completed"; ++i) std::this_thread::sleep_for(100ms);
        recovery = listening && rc == 0 && mig_status(dst, dq) == "completed" ? "paused; recovered: " : "paused; RECOVERY FAILED: ";
        src.wait_exit(10s);
    } else if (s_mig == "postcopy-paused") {
        // The destination is not paused: it completed, never started the guest, or is
        // gone. An operator gives the recovery up, where ferry allows it (not once the
        // destination showed it ran the guest).
        bool given_up = qmp_try_json(q, "migrate_cancel").has_value();
        // Refused: the destination said resumed or asked for pages (it ran the guest),
        // which the proxy may not have seen before the strike.
        source_saw_it_run = !given_up;
        for (int i = 0; given_up && i < 100 && mig_status(src, q) != "failed"; ++i) std::this_thread::sleep_for(100ms);
        recovery = given_up ? "paused (source), migrate_cancel: " : "paused (source): ";
    } else if (d_mig == "postcopy-paused") {
        recovery = "paused (destination): ";
    }
    d_mig = mig_status(dst, dq);
    std::string s_state = run_state(src, q), d_state = run_state(dst, dq);
    dst.drain();
    src.drain();
    INFO("source: " << s_state << "\n" << src.err() << "\ndestination: " << d_state << "\n" << dst.err());
    bool s_runs = s_state == "running", d_runs = d_state == "running";
    std::string why;
    if (s_runs && d_runs) {
        row.outcome = "TWO RUNNING COPIES";
    } else if (d_runs && d_mig == "postcopy-paused") {
        // Its source is gone: the pages it lacks went with it.
        row.ok = killed_src;
        row.outcome = "lost: the source, which held the pages the destination lacks, was killed (the destination waits, postcopy-paused)";
    } else if (d_runs) {
        row.ok = ticks_on(dst, why) && recovery.find("FAILED") == std::string::npos;
        row.outcome = recovery + (row.ok ? "destination runs it" : "destination: " + why);
    } else if (s_runs) {
        row.ok = ticks_on(src, why);
        row.outcome = row.ok ? "source runs it" : "source: " + why;
    } else if (s_state == "paused") {
        auto c = qmp_try_json(q, "cont");
        row.ok = c && ticks_on(src, why);
        row.outcome = recovery + (row.ok ? "source holds it paused; cont resumes it" : "source paused, cont: " + (c ? why : "refused"));
    } else {
        // Nobody runs it: acceptable only when the side that held it was killed, or a
        // postcopy broke after the destination ran the guest.
        // The destination ran it once it said resumed (or printed a tick).
        bool ran_on_dst = dst_resumed || source_saw_it_run || dst.out_text().find("guest: tick=") != std::string::npos;
        row.outcome = recovery;
        if (killed_src && !ran_on_dst && !after_go) {
            row.ok = true;
            row.outcome += "lost: the source, which ran it, was killed";
        } else if (killed_dst && ran_on_dst) {
            row.ok = true;
            row.outcome += "lost: the destination, which ran it, was killed";
        } else {
            row.outcome += fmt::format("LOST (source {}, destination {})", s_state, d_state);
        }
    }
    proxy.cut();
    CHECK(row.ok);
    INFO(row.outcome);
    cont_stopped(true);
    // No process is left behind: each side ends on SIGTERM, within 5 s whatever its state.
    for (Process* p : {&src, &dst}) {
        if (!alive(*p)) continue;
        p->signal(SIGTERM);
        auto t0 = std::chrono::steady_clock::now();
        bool ended = p->wait_exit(10s).has_value();
        CHECK(ended);
        CHECK(std::chrono::steady_clock::now() - t0 < 5s);
        if (!ended || std::chrono::steady_clock::now() - t0 >= 5s) {
            row.ok = false;
            row.outcome += "; SIGTERM took over 5 s";
        }
    }
    return row;
}

void write_table() {
    std::string path = SOURCE_ROOT "/docs/reliability.md";
    if (const char* p = std::getenv("FERRY_RELIABILITY_MD")) path = p;
    std::ofstream f(path, std::ios::trunc);
    f << "# Migration fault matrix\n\n"
         "Generated by `tests/integration/fault_matrix_test.cpp` (the `[faults]` cases of the KVM suite),\n"
         "which rewrites this file each time it runs. Each row: one migration of the test guest\n"
         "(`mode=verify`, 64 MiB, a virtio-blk disk) through a man in the middle that strikes once,\n"
         "at the first section of the phase, with each side's waits cut to 3 s: it cuts both\n"
         "connections before that section (`cut`) or after half of its bytes (`cut mid-section`),\n"
         "stops forwarding without closing (`stall`), flips one of its bytes, kills one side, or stops\n"
         "one side with SIGSTOP and continues it 5 s later. The outcome is what\n"
         "the test then found; the rules it checks are in docs/migration-protocol.md (\"Switch-over:\n"
         "exactly one running copy\"). `ok`: exactly one side runs the guest with its ticks going on\n"
         "and no corrupt page, or the source holds it paused and `cont` resumes it, or the guest was\n"
         "lost only because the side that ran it was killed (or, in postcopy, the source that held the\n"
         "pages the destination lacks). A postcopy whose connection broke pauses both sides\n"
         "(`paused`); the test then recovers it as an operator would (QMP `migrate-recover` on the\n"
         "destination, `ferry migrate --resume` on the source, straight to the destination), and the\n"
         "destination must run the guest. After each case both sides end on SIGTERM within 5 s.\n\n"
         "| mode | phase | fault | outcome | ok |\n|---|---|---|---|---|\n";
    // Also on stdout, so that the suite's log shows it.
    fmt::print("fault matrix ({}):\n| mode | phase | fault | outcome | ok |\n", path);
    for (const auto& r : rows()) {
        auto line = fmt::format("| {} | {} | {} | {} | {} |\n", r.mode, r.phase, r.fault, r.outcome, r.ok ? "yes" : "**NO**");
        f << line;
        fmt::print("{}", line);
    }
    std::fflush(stdout);
}

}  // namespace

TEST_CASE("fault matrix: every fault at every phase leaves exactly one guest, or one the operator can resume",
          "[kvm][migration][faults]") {
    rows().clear();
    const std::vector<Fault> faults{Fault::Cut,        Fault::CutMidway,       Fault::Stall,      Fault::Flip,
                                    Fault::KillSource, Fault::KillDestination, Fault::StopSource, Fault::StopDestination};
    const std::map<std::string, std::vector<Phase>> phases{
        {"precopy", {Phase::Setup, Phase::Round, Phase::StopAndCopy, Phase::Go, Phase::Completion}},
        {"postcopy", {Phase::Setup, Phase::StopAndCopy, Phase::Go, Phase::Postcopy, Phase::Completion}}};
    for (const std::string mode : {"precopy", "postcopy"})
        for (Phase p : phases.at(mode))
            for (Fault f : faults) rows().push_back(run_case(mode, p, f));
    write_table();
    for (const auto& r : rows()) {
        INFO(r.mode << " / " << r.phase << " / " << r.fault << ": " << r.outcome);
        CHECK(r.ok);
    }
}
