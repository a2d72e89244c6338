#include "explain_view.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "moe/common/time_format.h"
#include "moe/policies/knobs.h"

namespace moe::cli {
namespace {

using nlohmann::json;

json Parse(const std::string& text) {
  if (text.empty()) return json::object();
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  return j.is_object() ? j : json::object();
}

std::optional<int64_t> Integer(const std::string& text) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return v;
}

Cell NumberCell(const json& v) {
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_unsigned()) return static_cast<int64_t>(v.get<uint64_t>());
  if (v.is_number()) return v.get<double>();
  return std::monostate{};
}

std::string Optional(const std::optional<double>& v) {
  return v ? fmt::format("{:.6g}", *v) : std::string("-");
}

// {layer: {index: [before, after]}} into (layer, index) -> [before, after].
using Elements = std::map<std::pair<int64_t, int64_t>, json>;

Elements ReadElements(const json& layers) {
  Elements out;
  if (!layers.is_object()) return out;
  for (const auto& [layer_key, changed] : layers.items()) {
    const std::optional<int64_t> layer = Integer(layer_key);
    if (!layer || !changed.is_object()) continue;
    for (const auto& [index_key, pair] : changed.items()) {
      const std::optional<int64_t> index = Integer(index_key);
      if (!index || !pair.is_array() || pair.size() != 2) continue;
      out[{*layer, *index}] = pair;
    }
  }
  return out;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> ExplainHeader(const storage::DecisionRow& d) {
  const json proposal = Parse(d.proposal_json);
  std::vector<std::pair<std::string, std::string>> h;
  h.emplace_back("id", std::to_string(d.id));
  h.emplace_back("engine", d.engine_id);
  h.emplace_back("time", FormatIsoTime(d.created_ns));
  h.emplace_back("policy", d.policy);
  h.emplace_back("knob", d.knob);
  h.emplace_back("layer", d.layer < 0 ? std::string("all") : std::to_string(d.layer));
  if (proposal.contains("reason") && proposal["reason"].is_string()) {
    h.emplace_back("proposal", proposal["reason"].get<std::string>());
  }
  h.emplace_back("verdict",
                 d.verdict_reason.empty() ? d.verdict : d.verdict + ": " + d.verdict_reason);
  h.emplace_back("status", d.status);
  h.emplace_back("epoch", d.epoch ? std::to_string(*d.epoch) : std::string("-"));
  std::string ack = "-";
  if (d.acked_ns) {
    ack = FormatIsoTime(*d.acked_ns);
    if (d.applied_at_step) ack += fmt::format(", applied at step {}", *d.applied_at_step);
    if (!d.ack_error.empty()) ack += ", error: " + d.ack_error;
  } else if (!d.ack_error.empty()) {
    ack = "error: " + d.ack_error;
  }
  h.emplace_back("ack", ack);
  h.emplace_back("predicted gain", Optional(d.predicted_gain));
  h.emplace_back("reward before", Optional(d.reward_before));
  h.emplace_back("reward after", Optional(d.reward_after));
  return h;
}

TableData ExplainChanges(const storage::DecisionRow& d) {
  TableData t{{"knob", "layer", "index", "from", "proposed", "to"}, {}};
  const json proposal = Parse(d.proposal_json);
  const json command = Parse(d.command_json);
  const json sent = command.contains(d.knob) ? command[d.knob] : json();
  if (proposal.contains("changes") || sent.is_object()) {
    const Elements asked = ReadElements(proposal.value("changes", json::object()));
    const Elements set = ReadElements(sent);
    std::map<std::pair<int64_t, int64_t>, bool> keys;
    for (const auto& [k, v] : asked)
      keys[k] = true;
    for (const auto& [k, v] : set)
      keys[k] = true;
    for (const auto& [key, unused] : keys) {
      auto a = asked.find(key);
      auto s = set.find(key);
      const json& before = s != set.end() ? s->second[0] : a->second[0];
      t.rows.push_back({d.knob, key.first, key.second, NumberCell(before),
                        a != asked.end() ? NumberCell(a->second[1]) : Cell{},
                        s != set.end() ? NumberCell(s->second[1]) : Cell{}});
    }
    return t;
  }
  // A scalar knob: the value in force, the one asked for, the one sent (an
  // enum knob by its name).
  const policies::KnobSpec* spec = policies::FindKnob(d.knob);
  auto value = [&](const json& v) -> Cell {
    if (spec != nullptr && spec->kind == policies::KnobKind::kEnum && v.is_number()) {
      return spec->Format(v.get<double>());
    }
    return NumberCell(v);
  };
  t.rows.push_back({d.knob, d.layer < 0 ? Cell{std::string("all")} : Cell{int64_t{d.layer}}, Cell{},
                    value(proposal.value("current", json())),
                    value(proposal.value("value", json())), value(sent)});
  return t;
}

void PrintExplainHeader(const std::vector<std::pair<std::string, std::string>>& header,
                        std::ostream& out) {
  size_t width = 0;
  for (const auto& [label, text] : header)
    width = std::max(width, label.size());
  for (const auto& [label, text] : header)
    out << fmt::format("{:<{}}  {}\n", label + ":", width + 1, text);
}

}  // namespace moe::cli
