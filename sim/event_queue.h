#pragma once
// The discrete-event core of a replay (gem5's event queue, smaller): events are small value
// structs ordered by (step, phase, seq). New behaviour (multi-turn arrivals, block-wise prefill,
// offload/fetch latency, several sequences sharing memory) adds an EventType and, if it needs its
// own slot inside a step, a Phase; the loop that pops and dispatches stays as it is.
#include <cstddef>
#include <cstdint>
#include <queue>
#include <vector>

namespace kvsim::sim {

// Order of events within one step. Each value says why it sits where it does.
enum class Phase : uint8_t {
  kArrival = 0,  // new input arrives (a user turn) before anything is computed on it
  kPrefill,      // a prompt block is admitted; the policy sees its attention, may compress
  kAppend,       // decode token t's K/V joins the cache before its query attends (causal)
  kAttend,       // query t attends over the resident set; the policy observes (OnStep)
  kEvictEarly,   // EvictTiming::kBeforeAttend: evict before the step's output is measured
  kMeasure,      // metrics over the resident set vs the full cache
  kEvict,        // EvictTiming::kAfterAttend (default): evict after measuring, as official codes
  kLedger,       // memory is sampled last, so it sees the step's final resident set
};
const char* PhaseName(Phase phase);

enum class EventType : uint8_t {
  kPrefillBlock,  // positions [begin, end) of the prompt
  kDecodeAppend,  // append token `step`
  kAttend,        // attend with query `step`
  kEvict,         // ask the policy, apply its decision
  kMeasure,       // hand the step to the observer (metrics)
  kLedgerSample,  // record memory by category
  kTurnArrival,   // a conversation turn starts at position `begin` (trace segments)
};
const char* EventTypeName(EventType type);

struct Event {
  int64_t step = 0;  // simulated time: the position index the event is about
  Phase phase = Phase::kPrefill;
  uint64_t seq = 0;  // assigned by EventQueue::Push: FIFO among equal (step, phase)
  EventType type = EventType::kPrefillBlock;
  int64_t begin = 0;  // kPrefillBlock: positions [begin, end)
  int64_t end = 0;
  int32_t sequence = 0;  // which sequence (several may share memory later); 0 today
};

// Min-queue on (step, phase, seq). Deterministic: equal (step, phase) pop in push order.
class EventQueue {
 public:
  // Assigns the event its sequence number and enqueues it.
  void Push(Event event);
  // REQUIRES: !empty().
  Event Pop();
  const Event& Top() const;
  bool empty() const { return heap_.empty(); }
  size_t size() const { return heap_.size(); }

 private:
  struct Later {
    bool operator()(const Event& a, const Event& b) const;
  };
  std::priority_queue<Event, std::vector<Event>, Later> heap_;
  uint64_t next_seq_ = 0;
};

}  // namespace kvsim::sim
