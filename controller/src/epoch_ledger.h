// EpochLedger: per engine, the settings in force under each epoch, and how
// the controller knows them.
//
// A command's settings enter as kSent. An ack makes them kApplied; a refusal
// removes them; an ack timeout makes them kUnknown, and telemetry settles an
// unknown epoch: a step record carries the epoch it ran under (kApplied), a
// Hello carries the epoch and every knob in force (kApplied for its epoch).
// Nothing is learnt or measured under an epoch whose settings are not
// kApplied, so a change the engine applied without an ack that arrived is
// still measured with its own settings, never with the ones before it.
//
// Thread safety: a plain value, owned by one EngineState.

#ifndef MOE_CONTROLLER_SRC_EPOCH_LEDGER_H_
#define MOE_CONTROLLER_SRC_EPOCH_LEDGER_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "moe/policies/snapshot.h"

namespace moe::controller {

enum class EpochStatus {
  kSent,     // a command carries it; no ack yet
  kApplied,  // the engine runs (or ran) it: ack, Hello or a step record says so
  kUnknown,  // the ack timed out; telemetry has not said yet
};

struct EpochEntry {
  policies::KnobValues knobs;  // the settings in force under the epoch
  EpochStatus status = EpochStatus::kSent;
  std::string source;  // "sent", "ack", "hello", "telemetry"
  bool learnt = false;
};

class EpochLedger {
 public:
  // Most epochs kept; the oldest go first (the newest applied one stays).
  static constexpr size_t kMaxEntries = 256;
  // Also at most this many bytes of knob vectors (expert_bias, phy2log) over
  // all entries; the newest applied entry and the newest entry always stay.
  // (A placement of every layer can take MBs: 256 of them, hundreds.)
  void set_max_bytes(uint64_t max_bytes) { max_bytes_ = max_bytes; }
  // Bytes of knob vectors held now (kept as entries come and go, so a
  // command's Trim does not walk every entry's vectors).
  uint64_t bytes() const { return bytes_; }

  // The engine's Hello: `knobs` are in force under `epoch` (kApplied).
  // `restarted` (the Hello's epoch is below the one its telemetry showed, or
  // below the epochs restored as learnt): the engine counts epochs afresh,
  // so every entry from `epoch` up is dropped and nothing counts as learnt.
  void OnHello(uint64_t epoch, const policies::KnobValues& knobs, bool restarted);
  // A command under `epoch` will set `knobs` (the settings in force plus its
  // change).
  void OnSent(uint64_t epoch, policies::KnobValues knobs);
  void OnAcked(uint64_t epoch);
  void OnRefused(uint64_t epoch);
  void OnAckTimeout(uint64_t epoch);
  // The command under `epoch` was not applied (telemetry settled it).
  void OnNotApplied(uint64_t epoch);
  // A step ran under `epoch`. Returns true when this settled a kSent or
  // kUnknown epoch as applied.
  bool OnStep(uint64_t epoch);

  // The entry of `epoch`, or null.
  const EpochEntry* Find(uint64_t epoch) const;
  // The settings of `epoch` when applied; else those of the newest applied
  // epoch below it; else defaults.
  policies::KnobValues KnobsOf(uint64_t epoch) const { return KnobsRefOf(epoch); }
  // The same without the copy; valid until the ledger changes.
  const policies::KnobValues& KnobsRefOf(uint64_t epoch) const;
  // True when `epoch` is applied and its settings known.
  bool Known(uint64_t epoch) const;

  // Learnt bookkeeping: every epoch is learnt once.
  bool Learnt(uint64_t epoch) const;
  void MarkLearnt(uint64_t epoch);
  // Epochs up to `epoch` were learnt by an earlier run (its stored samples).
  void MarkLearntThrough(uint64_t epoch) { learnt_through_ = epoch; }
  // The engine restarted and counts epochs again: forget what was learnt.
  void ForgetLearnt() { learnt_through_.reset(); }

  size_t size() const { return entries_.size(); }

 private:
  void Trim();
  // Sets or replaces the entry of `epoch`, keeping bytes_.
  EpochEntry& Put(uint64_t epoch, EpochEntry entry);
  std::map<uint64_t, EpochEntry>::iterator Erase(std::map<uint64_t, EpochEntry>::iterator it);

  std::map<uint64_t, EpochEntry> entries_;
  uint64_t bytes_ = 0;  // BytesOf over entries_
  std::optional<uint64_t> learnt_through_;
  uint64_t max_bytes_ = UINT64_MAX;
};

std::string_view EpochStatusName(EpochStatus status);

}  // namespace moe::controller

#endif  // MOE_CONTROLLER_SRC_EPOCH_LEDGER_H_
