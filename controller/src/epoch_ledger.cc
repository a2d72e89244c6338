#include "epoch_ledger.h"

#include <utility>
#include <vector>

namespace moe::controller {
namespace {

uint64_t BytesOf(const policies::KnobValues& k) {
  uint64_t bytes = 0;
  for (const std::vector<float>& layer : k.expert_bias)
    bytes += sizeof(layer) + layer.capacity() * sizeof(float);
  for (const std::vector<uint32_t>& layer : k.phy2log)
    bytes += sizeof(layer) + layer.capacity() * sizeof(uint32_t);
  return bytes;
}

}  // namespace

std::string_view EpochStatusName(EpochStatus status) {
  switch (status) {
    case EpochStatus::kSent:
      return "sent";
    case EpochStatus::kApplied:
      return "applied";
    case EpochStatus::kUnknown:
      return "unknown";
  }
  return "?";
}

void EpochLedger::OnHello(uint64_t epoch, const policies::KnobValues& knobs, bool restarted) {
  // Epochs restored as learnt belong to an earlier run of a restarted engine.
  if (learnt_through_ && epoch < *learnt_through_) restarted = true;
  if (restarted) {
    // Its epochs from here on are new ones.
    for (auto it = entries_.lower_bound(epoch); it != entries_.end();)
      it = Erase(it);
    ForgetLearnt();
  }
  const EpochEntry* before = Find(epoch);
  const bool learnt = before != nullptr && before->learnt;
  Put(epoch, EpochEntry{knobs, EpochStatus::kApplied, "hello", learnt});
  Trim();
}

void EpochLedger::OnSent(uint64_t epoch, policies::KnobValues knobs) {
  Put(epoch, EpochEntry{std::move(knobs), EpochStatus::kSent, "sent", false});
  Trim();
}

void EpochLedger::OnAcked(uint64_t epoch) {
  auto it = entries_.find(epoch);
  if (it == entries_.end()) return;
  it->second.status = EpochStatus::kApplied;
  it->second.source = "ack";
}

void EpochLedger::OnRefused(uint64_t epoch) {
  auto it = entries_.find(epoch);
  if (it != entries_.end() && it->second.status != EpochStatus::kApplied) Erase(it);
}

void EpochLedger::OnAckTimeout(uint64_t epoch) {
  auto it = entries_.find(epoch);
  if (it != entries_.end() && it->second.status == EpochStatus::kSent) {
    it->second.status = EpochStatus::kUnknown;
  }
}

void EpochLedger::OnNotApplied(uint64_t epoch) {
  OnRefused(epoch);
}

bool EpochLedger::OnStep(uint64_t epoch) {
  auto it = entries_.find(epoch);
  if (it == entries_.end() || it->second.status == EpochStatus::kApplied) return false;
  it->second.status = EpochStatus::kApplied;
  it->second.source = "telemetry";
  return true;
}

const EpochEntry* EpochLedger::Find(uint64_t epoch) const {
  auto it = entries_.find(epoch);
  return it == entries_.end() ? nullptr : &it->second;
}

const policies::KnobValues& EpochLedger::KnobsRefOf(uint64_t epoch) const {
  static const policies::KnobValues kDefaults;
  auto it = entries_.upper_bound(epoch);
  while (it != entries_.begin()) {
    --it;
    if (it->second.status == EpochStatus::kApplied) return it->second.knobs;
  }
  return kDefaults;
}

bool EpochLedger::Known(uint64_t epoch) const {
  const EpochEntry* entry = Find(epoch);
  return entry != nullptr && entry->status == EpochStatus::kApplied;
}

bool EpochLedger::Learnt(uint64_t epoch) const {
  if (learnt_through_ && epoch <= *learnt_through_) return true;
  const EpochEntry* entry = Find(epoch);
  return entry != nullptr && entry->learnt;
}

void EpochLedger::MarkLearnt(uint64_t epoch) {
  auto it = entries_.find(epoch);
  if (it != entries_.end()) it->second.learnt = true;
}

EpochEntry& EpochLedger::Put(uint64_t epoch, EpochEntry entry) {
  const uint64_t added = BytesOf(entry.knobs);
  auto [it, inserted] = entries_.try_emplace(epoch);
  if (!inserted) bytes_ -= BytesOf(it->second.knobs);
  it->second = std::move(entry);
  bytes_ += added;
  return it->second;
}

std::map<uint64_t, EpochEntry>::iterator EpochLedger::Erase(
    std::map<uint64_t, EpochEntry>::iterator it) {
  bytes_ -= BytesOf(it->second.knobs);
  return entries_.erase(it);
}

void EpochLedger::Trim() {
  if (entries_.size() <= kMaxEntries && bytes_ <= max_bytes_) return;
  // Keep the newest applied entry: it holds the settings in force.
  auto newest_applied = entries_.end();
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    if (it->second.status == EpochStatus::kApplied) newest_applied = it;
  }
  while (entries_.size() > kMaxEntries || (bytes_ > max_bytes_ && entries_.size() > 2)) {
    auto victim = entries_.begin();
    if (victim == newest_applied) ++victim;
    Erase(victim);
  }
}

}  // namespace moe::controller
