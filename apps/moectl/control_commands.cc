#include "control_commands.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "moe/common/time_format.h"
#include "moe/policies/knobs.h"
#include "output.h"
#include "parse_args.h"

namespace moe::cli {
namespace {

using nlohmann::json;

constexpr const char* kDefaultSocket = "/run/moectld/control.sock";
// The daemon answers within its own 10 s loop timeout; a little more here.
constexpr int kReplyTimeoutS = 12;

struct ControlFlags {
  std::string socket;
  std::string engine;
  std::string reason;
  std::string format = "table";
};

[[noreturn]] void Fail(int code, const std::string& message) {
  std::fprintf(stderr, "moectl: %s\n", message.c_str());
  throw CLI::RuntimeError(code);
}

// Sends one request line and returns the daemon's reply; exits 1 with the
// fix when the socket cannot be used.
json Call(const std::string& path, const json& request) {
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path) Fail(kExitUsage, "--socket: path too long");
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) Fail(kExitFailure, fmt::format("socket: {}", std::strerror(errno)));
  std::unique_ptr<int, void (*)(int*)> closer(&fd, [](int* f) { close(*f); });
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    const int err = errno;
    if (err == EACCES || err == EPERM) {
      Fail(kExitFailure,
           fmt::format("cannot use moectld's control socket {}: permission denied. Its owner and "
                       "the members of its group may (`ls -l {}` shows them): ask to be added to "
                       "that group, or run as root",
                       path, path));
    }
    if (err == ENOENT || err == ECONNREFUSED) {
      Fail(kExitFailure,
           fmt::format("no moectld answers on {} ({}): is it running (systemctl status "
                       "moectld), and is this its control.socket (--socket, $MOECTL_SOCKET)?",
                       path, std::strerror(err)));
    }
    Fail(kExitFailure, fmt::format("cannot connect to {}: {}", path, std::strerror(err)));
  }
  timeval tv{kReplyTimeoutS, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  const std::string line = request.dump() + "\n";
  if (send(fd, line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) {
    Fail(kExitFailure, fmt::format("sending to {}: {}", path, std::strerror(errno)));
  }
  std::string text;
  char buf[4096];
  while (text.find('\n') == std::string::npos) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0) Fail(kExitFailure, fmt::format("no reply from {}: {}", path, std::strerror(errno)));
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  json reply = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (reply.is_discarded() || !reply.is_object()) {
    Fail(kExitFailure, fmt::format("{} sent a reply that is not JSON: {}", path, text));
  }
  if (!reply.value("ok", false)) {
    const std::string code = reply.value("code", "");
    Fail(code == "invalid_argument" || code == "not_found" ? kExitUsage : kExitFailure,
         reply.value("error", std::string("refused")));
  }
  return reply;
}

void AddSocketFlag(CLI::App* cmd, ControlFlags* flags) {
  const char* env = std::getenv("MOECTL_SOCKET");
  flags->socket = env ? env : kDefaultSocket;
  cmd->add_option(
      "--socket", flags->socket,
      std::string("moectld's control socket (default $MOECTL_SOCKET or ") + kDefaultSocket + ")");
}

void AddLeverFlags(CLI::App* cmd, ControlFlags* flags) {
  AddSocketFlag(cmd, flags);
  cmd->add_option("--engine", flags->engine, "engine id (moectl status lists them)")->required();
  cmd->add_option("--reason", flags->reason, "why: kept with who pulled the lever in its audit row")
      ->required();
}

// Prints the daemon's answer to a lever and its audit row.
void PrintLever(const json& reply) {
  std::cout << reply.value("message", std::string()) << "\n";
  std::cout << "audit: lever " << reply.value("action_id", int64_t{0});
  if (reply.contains("decision_id")) std::cout << ", decision " << reply["decision_id"];
  std::cout << " (moectl levers; moectl explain ID)\n";
}

Cell Number(const json& j, const char* key) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_number()) return Cell{};
  return j[key].get<double>();
}

std::string Text(const json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : "";
}

void Status(const ControlFlags& flags) {
  json request = {{"op", "status"}};
  if (!flags.engine.empty()) request["engine"] = flags.engine;
  const json reply = Call(flags.socket, request);
  Result<Format> format = ParseFormat(flags.format);
  if (!format.ok()) Fail(kExitUsage, "--format: " + format.status().message());
  if (*format == Format::kJson) {
    std::cout << reply["engines"].dump(2) << "\n";
    return;
  }
  // Every scalar knob of the knob table gets a column, in the table's order.
  std::vector<std::string> header = {"engine", "state", "mode", "paused", "epoch"};
  std::vector<std::string> knob_names;
  for (const policies::KnobSpec& spec : policies::AllKnobs()) {
    if (spec.scalar()) knob_names.emplace_back(spec.name);
  }
  header.insert(header.end(), knob_names.begin(), knob_names.end());
  for (const char* h : {"max_abs_bias", "pins", "in_flight", "last_outcome", "drop_rate", "step_ms",
                        "critical_path_ms", "last_seen"}) {
    header.emplace_back(h);
  }
  TableData t{header, {}};
  for (const json& e : reply["engines"]) {
    std::string pins;
    for (const json& p : e["pins"]) {
      if (!pins.empty()) pins += " ";
      pins += fmt::format("{}={:.4g}{}", Text(p, "knob"), p["value"].get<double>(),
                          p["until"].is_string() ? " until " + p["until"].get<std::string>() : "");
    }
    std::string in_flight;
    if (e.contains("in_flight") && e["in_flight"].is_object()) {
      const json& f = e["in_flight"];
      in_flight =
          fmt::format("#{} {}={:.4g} epoch {} ({})", f["decision"].get<int64_t>(), Text(f, "knob"),
                      f["value"].get<double>(), f["epoch"].get<uint64_t>(), Text(f, "state"));
    }
    std::string outcome;
    if (e.contains("last_outcome") && e["last_outcome"].is_object()) {
      const json& o = e["last_outcome"];
      outcome = fmt::format(
          "#{} {}={:.4g} reward {:.4f} -> {}{}", o["decision"].get<int64_t>(), Text(o, "knob"),
          o["value"].get<double>(), o["reward_before"].get<double>(),
          o["reward_after"].is_number() ? fmt::format("{:.4f}", o["reward_after"].get<double>())
                                        : std::string("?"),
          o["rolled_back"].get<bool>() ? " (rolled back)" : "");
    }
    const json knobs = e.value("knobs", json::object());
    const std::string mode =
        Text(e, "mode") + (Text(e, "mode_from") == "operator" ? " (operator)" : "");
    std::vector<Cell> row = {Text(e, "engine"), Text(e, "liveness"), mode,
                             std::string(e.value("paused", false) ? "yes" : "no"),
                             e.contains("epoch") ? Cell{e["epoch"].get<int64_t>()} : Cell{}};
    for (const std::string& name : knob_names) {
      // An enum knob comes as its name, the others as numbers.
      if (knobs.contains(name) && knobs[name].is_string()) {
        row.emplace_back(knobs[name].get<std::string>());
      } else {
        row.push_back(Number(knobs, name.c_str()));
      }
    }
    for (Cell c : {Number(knobs, "max_abs_bias"), Cell{pins}, Cell{in_flight}, Cell{outcome},
                   Number(e, "drop_rate"), Number(e, "step_ms"), Number(e, "critical_path_ms"),
                   Cell{Text(e, "last_seen")}}) {
      row.push_back(std::move(c));
    }
    t.rows.push_back(std::move(row));
  }
  Render(t, *format, std::cout, 4);
}

// "capacity_factor=2.5" -> knob and value.
std::pair<std::string, double> ParseAssignment(const std::string& text) {
  const size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == text.size()) {
    Fail(kExitUsage, fmt::format("'{}': expected KNOB=VALUE, e.g. capacity_factor=2.5", text));
  }
  const std::string knob = text.substr(0, eq);
  const std::string number = text.substr(eq + 1);
  if (const policies::KnobSpec* spec = policies::FindKnob(knob);
      spec != nullptr && spec->kind == policies::KnobKind::kEnum) {
    Result<double> value = spec->Parse(number);
    if (!value.ok()) Fail(kExitUsage, fmt::format("'{}': {}", text, value.status().message()));
    return {knob, *value};
  }
  char* end = nullptr;
  const double value = std::strtod(number.c_str(), &end);
  if (end == number.c_str() || *end != '\0' || !std::isfinite(value)) {
    Fail(kExitUsage, fmt::format("'{}': the value '{}' is not a number", text, number));
  }
  return {knob, value};
}

}  // namespace

void AddControlCommands(CLI::App& app) {
  auto flags = std::make_shared<ControlFlags>();

  CLI::App* status = app.add_subcommand(
      "status",
      "per engine, from the running moectld: live/stale/gone, mode, levers, knobs in "
      "force, the decision in flight, the last outcome, drop rate and latency now");
  AddSocketFlag(status, flags.get());
  status->add_option("--engine", flags->engine, "one engine (default: every engine)");
  status->add_option("--format", flags->format, "table | csv | json")->capture_default_str();
  status->callback([flags] { Status(*flags); });

  auto simple = [&](const char* name, const char* help) {
    CLI::App* cmd = app.add_subcommand(name, help);
    AddLeverFlags(cmd, flags.get());
    cmd->callback([flags, name] {
      PrintLever(Call(flags->socket,
                      {{"op", name}, {"engine", flags->engine}, {"reason", flags->reason}}));
    });
  };
  simple("pause",
         "the controller decides nothing new for the engine until resumed (audited lever)");
  simple("resume", "undo pause: the engine's policies run again (audited lever)");

  auto assignment = std::make_shared<std::string>();
  auto duration = std::make_shared<std::string>();
  CLI::App* pin = app.add_subcommand(
      "pin",
      "hold KNOB at VALUE: sent now, and no policy changes it (the guard's bounds still "
      "apply) until it lapses (--for) or is unpinned (audited lever)");
  AddLeverFlags(pin, flags.get());
  pin->add_option(
         "assignment", *assignment,
         "KNOB=VALUE: one of " + policies::KnobNames([](const policies::KnobSpec& k) {
           return k.pinnable;
         }) + " (expert_bias: every element; an enum by name, e.g. overflow_policy=reroute)")
      ->required();
  pin->add_option("--for", *duration, "how long it holds, e.g. 10m or 2h (default: until unpin)");
  pin->callback([flags, assignment, duration] {
    auto [knob, value] = ParseAssignment(*assignment);
    json request = {{"op", "pin"},
                    {"engine", flags->engine},
                    {"reason", flags->reason},
                    {"knob", knob},
                    {"value", value}};
    if (!duration->empty()) {
      Result<int64_t> ns = ParseDuration(*duration);
      if (!ns.ok() || *ns <= 0) {
        Fail(kExitUsage, fmt::format("--for {}: {}", *duration,
                                     ns.ok() ? "must be longer than zero" : ns.status().message()));
      }
      request["for_ms"] = *ns / 1'000'000;
    }
    PrintLever(Call(flags->socket, request));
  });

  auto knob = std::make_shared<std::string>();
  CLI::App* unpin = app.add_subcommand(
      "unpin", "give KNOB back to the policies; its value stays (audited lever)");
  AddLeverFlags(unpin, flags.get());
  unpin->add_option("knob", *knob, "the pinned knob")->required();
  unpin->callback([flags, knob] {
    PrintLever(Call(
        flags->socket,
        {{"op", "unpin"}, {"engine", flags->engine}, {"reason", flags->reason}, {"knob", *knob}}));
  });

  auto mode = std::make_shared<std::string>();
  CLI::App* mode_cmd = app.add_subcommand(
      "mode",
      "switch one engine to advisory (decide and audit, send nothing) or active, over "
      "controller.toml's mode (audited lever)");
  AddLeverFlags(mode_cmd, flags.get());
  mode_cmd->add_option("mode", *mode, "advisory | active")
      ->required()
      ->check(CLI::IsMember({"advisory", "active"}));
  mode_cmd->callback([flags, mode] {
    PrintLever(Call(
        flags->socket,
        {{"op", "mode"}, {"engine", flags->engine}, {"reason", flags->reason}, {"mode", *mode}}));
  });
}

}  // namespace moe::cli
