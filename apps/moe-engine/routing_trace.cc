#include "routing_trace.h"

#include <nlohmann/json.hpp>
#include <string_view>

namespace moe::engine_app {
namespace {

using Json = nlohmann::json;

std::string Where(const std::string& path, size_t line, std::string_view field) {
  std::string out = path + ":" + std::to_string(line) + ": ";
  if (!field.empty()) out += "field \"" + std::string(field) + "\": ";
  return out;
}

// Reads a non-negative integer field below `limit`.
Status ReadCount(const Json& obj, const char* key, uint64_t limit, const std::string& where,
                 uint64_t* out) {
  auto it = obj.find(key);
  if (it == obj.end()) {
    return Status::InvalidArgument(where + "field \"" + key + "\" is missing; add it");
  }
  if (!it->is_number_integer() || it->get<int64_t>() < 0 ||
      static_cast<uint64_t>(it->get<int64_t>()) >= limit) {
    return Status::InvalidArgument(where + "field \"" + key + "\": expected an integer in [0, " +
                                   std::to_string(limit) + "), got " + it->dump());
  }
  *out = it->get<uint64_t>();
  return Status::Ok();
}

Status CheckKeys(const Json& obj, std::initializer_list<std::string_view> known,
                 const std::string& where) {
  for (const auto& [key, value] : obj.items()) {
    bool ok = false;
    for (std::string_view k : known)
      ok = ok || key == k;
    if (!ok) {
      std::string names;
      for (std::string_view k : known)
        names += (names.empty() ? "" : ", ") + std::string(k);
      return Status::InvalidArgument(where + "unknown field \"" + key + "\" (known: " + names +
                                     "); remove or rename it");
    }
  }
  return Status::Ok();
}

Result<Json> ParseLine(const std::string& text, const std::string& where) {
  Json value = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) {
    return Status::InvalidArgument(where + "not a valid JSON object; each line must be one " +
                                   "complete JSON object (JSON Lines)");
  }
  if (!value.is_object()) {
    return Status::InvalidArgument(where + "expected a JSON object, got " +
                                   std::string(value.type_name()));
  }
  return value;
}

Status ReadHeader(const Json& h, const std::string& where, TraceHeader* header) {
  MOE_RETURN_IF_ERROR(
      CheckKeys(h, {"format", "version", "num_layers", "num_experts", "top_k", "source"}, where));
  auto format = h.find("format");
  if (format == h.end() || !format->is_string() || format->get<std::string>() != kTraceFormat) {
    return Status::InvalidArgument(where + "field \"format\": the first line must be the header " +
                                   "{\"format\": \"" + kTraceFormat + "\", \"version\": 1, " +
                                   "\"num_layers\": L, \"num_experts\": E}");
  }
  uint64_t version = 0, layers = 0, experts = 0, top_k = 0;
  MOE_RETURN_IF_ERROR(ReadCount(h, "version", 1u << 20, where, &version));
  if (version != kTraceVersion) {
    return Status::InvalidArgument(where + "field \"version\": version " + std::to_string(version) +
                                   " is not supported; this build reads version " +
                                   std::to_string(kTraceVersion));
  }
  MOE_RETURN_IF_ERROR(ReadCount(h, "num_layers", 4097, where, &layers));
  MOE_RETURN_IF_ERROR(ReadCount(h, "num_experts", 65537, where, &experts));
  if (layers == 0 || experts == 0) {
    return Status::InvalidArgument(where + "num_layers and num_experts must be >= 1");
  }
  if (h.contains("top_k")) MOE_RETURN_IF_ERROR(ReadCount(h, "top_k", 65537, where, &top_k));
  if (h.contains("source")) {
    if (!h["source"].is_string()) {
      return Status::InvalidArgument(where + "field \"source\": expected a string");
    }
    header->source = h["source"].get<std::string>();
  }
  header->num_layers = static_cast<uint32_t>(layers);
  header->num_experts = static_cast<uint32_t>(experts);
  header->top_k = static_cast<uint32_t>(top_k);
  return Status::Ok();
}

Status ReadExperts(const Json& record, uint32_t num_experts, const std::string& path, size_t line,
                   engine::ExpertSelection* out) {
  auto it = record.find("experts");
  const std::string where = Where(path, line, "experts");
  if (it == record.end()) {
    return Status::InvalidArgument(Where(path, line, "") +
                                   "field \"experts\" is missing; add one list of expert ids " +
                                   "per token, e.g. \"experts\": [[3, 7], [1, 2]]");
  }
  if (!it->is_array() || it->empty()) {
    return Status::InvalidArgument(where + "expected a non-empty list with one list of expert " +
                                   "ids per token, e.g. [[3, 7], [1, 2]]");
  }
  std::vector<char> seen(num_experts, 0);
  out->offsets.assign(1, 0);
  for (size_t t = 0; t < it->size(); ++t) {
    const Json& token = (*it)[t];
    const std::string at = where + "token " + std::to_string(t) + ": ";
    if (!token.is_array() || token.empty()) {
      return Status::InvalidArgument(at + "expected a non-empty list of expert ids, got " +
                                     token.dump());
    }
    for (const Json& id : token) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
          id.get<int64_t>() >= static_cast<int64_t>(num_experts)) {
        return Status::InvalidArgument(at + "expert id " + id.dump() + " is not in [0, " +
                                       std::to_string(num_experts) +
                                       ") (num_experts in the header)");
      }
      const int32_t e = id.get<int32_t>();
      if (seen[e]) {
        return Status::InvalidArgument(at + "expert " + std::to_string(e) +
                                       " appears twice; list each chosen expert once");
      }
      seen[e] = 1;
      out->experts.push_back(e);
    }
    for (const Json& id : token)
      seen[id.get<int32_t>()] = 0;
    out->offsets.push_back(static_cast<uint32_t>(out->experts.size()));
  }
  return Status::Ok();
}

}  // namespace

const TraceStep* RoutingTrace::StepFor(uint64_t step, bool loop) const {
  if (steps.empty()) return nullptr;
  if (loop) return &steps[step % steps.size()];
  return step < steps.size() ? &steps[step] : nullptr;
}

std::vector<const engine::ExpertSelection*> RoutingOf(const TraceStep& step) {
  std::vector<const engine::ExpertSelection*> out(step.layers.size(), nullptr);
  for (size_t l = 0; l < step.layers.size(); ++l) {
    if (step.layers[l]) out[l] = &*step.layers[l];
  }
  return out;
}

Result<RoutingTrace> LoadRoutingTrace(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return Status::NotFound(path + ": cannot open the routing trace; check [trace] path " +
                            "(relative to the scenario file)");
  }
  RoutingTrace trace;
  trace.path = path;
  std::string text;
  size_t line = 0;
  bool have_header = false;
  std::vector<size_t> step_line;  // line of each step's first record
  while (std::getline(in, text)) {
    ++line;
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = Where(path, line, "");
    MOE_ASSIGN_OR_RETURN(Json obj, ParseLine(text, where));
    if (!have_header) {
      MOE_RETURN_IF_ERROR(ReadHeader(obj, where, &trace.header));
      have_header = true;
      continue;
    }
    MOE_RETURN_IF_ERROR(CheckKeys(obj, {"step", "layer", "experts"}, where));
    uint64_t step = 0, layer = 0;
    MOE_RETURN_IF_ERROR(ReadCount(obj, "step", uint64_t{1} << 40, where, &step));
    MOE_RETURN_IF_ERROR(ReadCount(obj, "layer", trace.header.num_layers, where, &layer));
    if (step != trace.steps.size() && step + 1 != trace.steps.size()) {
      const std::string expected = trace.steps.empty()
                                       ? "0"
                                       : std::to_string(trace.steps.size() - 1) + " or " +
                                             std::to_string(trace.steps.size());
      return Status::InvalidArgument(Where(path, line, "step") + "got " + std::to_string(step) +
                                     ", expected " + expected +
                                     "; steps start at 0 and go up by 1, records in step order");
    }
    if (step == trace.steps.size()) {
      trace.steps.emplace_back();
      trace.steps.back().layers.resize(trace.header.num_layers);
      step_line.push_back(line);
    }
    TraceStep& ts = trace.steps.back();
    if (ts.layers[layer]) {
      return Status::InvalidArgument(Where(path, line, "layer") + "layer " + std::to_string(layer) +
                                     " appears twice in step " + std::to_string(step) +
                                     "; keep one record per step and layer");
    }
    engine::ExpertSelection selection;
    MOE_RETURN_IF_ERROR(ReadExperts(obj, trace.header.num_experts, path, line, &selection));
    const uint32_t tokens = static_cast<uint32_t>(selection.num_tokens());
    if (ts.num_tokens != 0 && tokens != ts.num_tokens) {
      return Status::InvalidArgument(
          Where(path, line, "experts") + std::to_string(tokens) + " tokens, but step " +
          std::to_string(step) + " has " + std::to_string(ts.num_tokens) + " (line " +
          std::to_string(step_line.back()) + "); every layer of a step routes the same tokens");
    }
    ts.num_tokens = tokens;
    ts.layers[layer] = std::move(selection);
  }
  if (!have_header) {
    return Status::InvalidArgument(path + ":1: the trace is empty; it needs the header line " +
                                   "{\"format\": \"" + kTraceFormat + "\", ...}");
  }
  if (trace.steps.empty()) {
    return Status::InvalidArgument(path + ":" + std::to_string(line + 1) +
                                   ": the trace has a header but no records; add at least one " +
                                   "{\"step\": 0, \"layer\": 0, \"experts\": [[...]]}");
  }
  return trace;
}

Status CheckTraceFitsModel(const RoutingTrace& trace, const engine::Options& options) {
  const TraceHeader& h = trace.header;
  if (h.num_experts != options.model.num_experts) {
    return Status::InvalidArgument(
        trace.path + ":1: field \"num_experts\": the trace has " + std::to_string(h.num_experts) +
        " experts, the model " + std::to_string(options.model.num_experts) +
        "; replay it with a model of " + std::to_string(h.num_experts) + " experts");
  }
  if (h.num_layers > options.model.num_layers) {
    return Status::InvalidArgument(
        trace.path + ":1: field \"num_layers\": the trace has " + std::to_string(h.num_layers) +
        " layers, the model " + std::to_string(options.model.num_layers) +
        "; replay it with a model of at least " + std::to_string(h.num_layers) + " layers");
  }
  return Status::Ok();
}

Result<std::unique_ptr<TraceRecorder>> TraceRecorder::Open(const std::string& path,
                                                           const TraceHeader& header) {
  std::unique_ptr<TraceRecorder> r(new TraceRecorder(path));
  r->out_.open(path, std::ios::out | std::ios::trunc);
  if (!r->out_) return Status::IoError(path + ": cannot open the trace file for writing");
  nlohmann::ordered_json h;
  h["format"] = kTraceFormat;
  h["version"] = kTraceVersion;
  h["num_layers"] = header.num_layers;
  h["num_experts"] = header.num_experts;
  if (header.top_k > 0) h["top_k"] = header.top_k;
  if (!header.source.empty()) h["source"] = header.source;
  r->out_ << h.dump() << '\n';
  if (!r->out_) return Status::IoError(path + ": write failed");
  return r;
}

Status TraceRecorder::Append(const engine::StepStats& stats) {
  if (!out_.is_open()) return Status::FailedPrecondition(path_ + ": trace recorder closed");
  for (const engine::LayerStats& l : stats.layers) {
    const engine::ExpertSelection& s = l.selection;
    nlohmann::ordered_json record;
    record["step"] = num_steps_;
    record["layer"] = l.layer;
    Json experts = Json::array();
    for (int t = 0; t < s.num_tokens(); ++t) {
      experts.push_back(Json(std::vector<int32_t>(s.experts.begin() + s.offsets[t],
                                                  s.experts.begin() + s.offsets[t + 1])));
    }
    record["experts"] = std::move(experts);
    out_ << record.dump() << '\n';
  }
  if (!out_) return Status::IoError(path_ + ": write failed");
  ++num_steps_;
  return Status::Ok();
}

Status TraceRecorder::Close() {
  if (!out_.is_open()) return Status::FailedPrecondition(path_ + ": trace recorder closed");
  out_.close();
  if (out_.fail()) return Status::IoError(path_ + ": close failed");
  return Status::Ok();
}

}  // namespace moe::engine_app
