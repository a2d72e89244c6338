#include "moe/engine/workload.h"

#include <string>

#include "moe/engine/model.h"

namespace moe::engine {

Status ValidateScenario(const ScenarioOptions& s) {
  if (s.num_domains < 1) return Status::InvalidArgument("scenario: num_domains must be >= 1");
  if (!(s.domain_scale >= 0) || !(s.noise_scale >= 0)) {
    return Status::InvalidArgument("scenario: domain_scale and noise_scale must be >= 0");
  }
  if (s.tokens_per_step < 1) return Status::InvalidArgument("scenario: tokens_per_step >= 1");
  for (size_t i = 0; i < s.keyframes.size(); ++i) {
    const Keyframe& k = s.keyframes[i];
    const std::string where = "scenario keyframe " + std::to_string(i) + ": ";
    if (i > 0 && k.step <= s.keyframes[i - 1].step) {
      return Status::InvalidArgument(where + "steps must increase");
    }
    if (k.mix.size() != s.num_domains) {
      return Status::InvalidArgument(where + "mix needs " + std::to_string(s.num_domains) +
                                     " entries, got " + std::to_string(k.mix.size()));
    }
    double total = 0;
    for (double w : k.mix) {
      if (!(w >= 0)) return Status::InvalidArgument(where + "mix entries must be >= 0");
      total += w;
    }
    if (!(total > 0)) return Status::InvalidArgument(where + "mix must not be all zero");
    for (double f : k.device_slowdown) {
      if (!(f >= 1.0 && f <= 100.0)) {
        return Status::InvalidArgument(where + "device_slowdown entries must be in [1, 100]");
      }
    }
  }
  if (s.cycle_steps > 0 && !s.keyframes.empty() && s.keyframes.back().step >= s.cycle_steps) {
    return Status::InvalidArgument("scenario: keyframes must lie before cycle_steps");
  }
  return Status::Ok();
}

namespace {

class WorkloadImpl final : public Workload {
 public:
  WorkloadImpl(const ScenarioOptions& scenario, uint32_t hidden)
      : scenario_(scenario), hidden_(hidden) {
    NormalStream rng(MixSeed(scenario.seed, 0, 11));
    means_.resize(static_cast<size_t>(scenario.num_domains) * hidden);
    for (float& v : means_)
      v = static_cast<float>(rng.Next() * scenario.domain_scale);
  }

  std::vector<double> Mix(uint64_t step) const override {
    const auto& kf = scenario_.keyframes;
    std::vector<double> mix(scenario_.num_domains, 1.0);
    if (!kf.empty()) {
      const uint64_t s = Wrap(step);
      if (s <= kf.front().step) {
        mix = kf.front().mix;
      } else if (s >= kf.back().step) {
        mix = kf.back().mix;
      } else {
        size_t i = 0;
        while (kf[i + 1].step <= s)
          ++i;
        const double f = static_cast<double>(s - kf[i].step) / (kf[i + 1].step - kf[i].step);
        for (size_t d = 0; d < mix.size(); ++d) {
          mix[d] = (1 - f) * Normalised(kf[i].mix, d) + f * Normalised(kf[i + 1].mix, d);
        }
      }
    }
    double total = 0;
    for (double w : mix)
      total += w;
    for (double& w : mix)
      w /= total;
    return mix;
  }

  using Workload::Generate;
  WorkloadStep Generate(uint64_t step, uint32_t num_tokens_override) const override {
    WorkloadStep out;
    const uint64_t s = Wrap(step);
    uint32_t num_tokens = scenario_.tokens_per_step;
    for (const Keyframe& k : scenario_.keyframes) {
      if (k.step > s) break;
      if (k.tokens_per_step > 0) num_tokens = k.tokens_per_step;
      if (!k.device_slowdown.empty()) out.device_slowdown = k.device_slowdown;
    }
    if (num_tokens_override > 0) num_tokens = num_tokens_override;
    out.num_tokens = static_cast<int>(num_tokens);
    out.hidden.resize(static_cast<size_t>(num_tokens) * hidden_);
    out.domain_tokens.assign(scenario_.num_domains, 0);
    const std::vector<double> mix = Mix(step);
    NormalStream rng(MixSeed(scenario_.seed, step, 12));
    for (uint32_t t = 0; t < num_tokens; ++t) {
      double u = rng.Uniform();
      uint32_t d = 0;
      while (d + 1 < mix.size() && u >= mix[d])
        u -= mix[d++];
      out.domain_tokens[d]++;
      const float* mean = means_.data() + static_cast<size_t>(d) * hidden_;
      float* row = out.hidden.data() + static_cast<size_t>(t) * hidden_;
      for (uint32_t h = 0; h < hidden_; ++h) {
        row[h] = mean[h] + static_cast<float>(rng.Next() * scenario_.noise_scale);
      }
    }
    return out;
  }

  const ScenarioOptions& scenario() const override { return scenario_; }

 private:
  uint64_t Wrap(uint64_t step) const {
    return scenario_.cycle_steps > 0 ? step % scenario_.cycle_steps : step;
  }
  static double Normalised(const std::vector<double>& mix, size_t d) {
    double total = 0;
    for (double w : mix)
      total += w;
    return mix[d] / total;
  }

  const ScenarioOptions scenario_;
  const uint32_t hidden_;
  std::vector<float> means_;  // [num_domains, H]
};

}  // namespace

Result<std::unique_ptr<Workload>> Workload::Create(const ScenarioOptions& scenario,
                                                   uint32_t hidden) {
  MOE_RETURN_IF_ERROR(ValidateScenario(scenario));
  if (hidden < 1) return Status::InvalidArgument("workload: hidden must be >= 1");
  return std::unique_ptr<Workload>(new WorkloadImpl(scenario, hidden));
}

}  // namespace moe::engine
