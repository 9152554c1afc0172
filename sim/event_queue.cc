#include "sim/event_queue.h"

#include "common/error.h"

namespace kvsim::sim {

const char* PhaseName(Phase phase) {
  switch (phase) {
    case Phase::kArrival:
      return "arrival";
    case Phase::kPrefill:
      return "prefill";
    case Phase::kAppend:
      return "append";
    case Phase::kAttend:
      return "attend";
    case Phase::kEvictEarly:
      return "evict-early";
    case Phase::kMeasure:
      return "measure";
    case Phase::kEvict:
      return "evict";
    case Phase::kLedger:
      return "ledger";
  }
  return "?";
}

const char* EventTypeName(EventType type) {
  switch (type) {
    case EventType::kPrefillBlock:
      return "prefill-block";
    case EventType::kDecodeAppend:
      return "decode-append";
    case EventType::kAttend:
      return "attend";
    case EventType::kEvict:
      return "evict";
    case EventType::kMeasure:
      return "measure";
    case EventType::kTurnArrival:
      return "turn-arrival";
    case EventType::kLedgerSample:
      return "ledger-sample";
  }
  return "?";
}

bool EventQueue::Later::operator()(const Event& a, const Event& b) const {
  if (a.step != b.step) return a.step > b.step;
  if (a.phase != b.phase) return a.phase > b.phase;
  return a.seq > b.seq;
}

void EventQueue::Push(Event event) {
  event.seq = next_seq_++;
  heap_.push(event);
}

const Event& EventQueue::Top() const {
  KVSIM_ASSERT(!heap_.empty(), "Top() on an empty event queue");
  return heap_.top();
}

Event EventQueue::Pop() {
  KVSIM_ASSERT(!heap_.empty(), "Pop() on an empty event queue");
  Event event = heap_.top();
  heap_.pop();
  return event;
}

}  // namespace kvsim::sim
