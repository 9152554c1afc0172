// Randomized Mark0 with discard predictions (Antoniadis et al., "Paging with Succinct
// Predictions", ICML 2023, setup 1; card memory-and-paging.md 6.5). As mark0 (mark0.cc): every
// requested page is marked and a fault evicts an unmarked page whose latest bit is 1 (the
// earliest admitted of those) when there is one; otherwise it evicts a uniformly random unmarked
// page, as rmarker does, instead of the earliest admitted. Draws come only from
// PolicySetup::seed (same seed, same faults). With bits that never name an unmarked page it is
// the randomized Marker, (2 H_k - 1)-competitive; bits can steer every eviction to a fixed page,
// so against adversarial bits the guarantee left is the k of every marking algorithm.
#include <memory>
#include <random>
#include <vector>

#include "common/error.h"
#include "policies/paging/marking.h"

namespace kvsim::paging {
namespace {

class Mark0RandomPolicy final : public PagingPolicy {
 public:
  void Reset(const PolicySetup& setup) override {
    KVSIM_ASSERT(!setup.bits.empty() || setup.requests->requests() == 0,
                 "mark0-rand replayed without prediction bits");
    bits_ = setup.bits.data();
    const uint32_t n = setup.requests->num_pages();
    marks_.Reset(n);
    latest_bit_.assign(n, 0);
    discardable_.Reset(n);
    kept_.clear();
    slot_.assign(n, kNotKept);
    rng_.seed(setup.seed);
  }
  void OnHit(int64_t index, uint32_t page) override {
    latest_bit_[page] = bits_[index];
    if (marks_.IsMarked(page)) return;
    marks_.Mark(page);
    if (discardable_.Contains(page)) {
      discardable_.Remove(page);
    } else {
      TakeKept(slot_[page]);
    }
  }
  void OnInsert(int64_t index, uint32_t page) override {
    latest_bit_[page] = bits_[index];
    marks_.Admit(page);
  }
  uint32_t Evict(int64_t, const PinView& pins) override {
    if (discardable_.empty() && kept_.empty()) {
      marks_.NewPhase(pins, [&](uint32_t p) {
        if (latest_bit_[p]) {
          discardable_.PushFront(p);
        } else {
          slot_[p] = kept_.size();
          kept_.push_back(p);
        }
      });
    }
    uint32_t victim = 0;
    if (!discardable_.empty()) {
      victim = discardable_.Back();
      discardable_.Remove(victim);
    } else {
      // A 53-bit uniform draw scaled to [0, n), as rmarker draws (portable across libraries).
      const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53;
      const auto pick = static_cast<size_t>(u * static_cast<double>(kept_.size()));
      victim = kept_[pick];
      TakeKept(pick);
    }
    marks_.Drop(victim);
    return victim;
  }

 private:
  static constexpr size_t kNotKept = static_cast<size_t>(-1);

  // Removes kept_[at] by moving the last entry into its place.
  void TakeKept(size_t at) {
    KVSIM_ASSERT(at < kept_.size(), "mark0-rand: unmarked page missing from its lists");
    const uint32_t removed = kept_[at];
    const uint32_t last = kept_.back();
    kept_[at] = last;
    slot_[last] = at;
    kept_.pop_back();
    slot_[removed] = kNotKept;
  }

  const uint8_t* bits_ = nullptr;
  Marks marks_;
  std::vector<uint8_t> latest_bit_;
  PageList discardable_;        // unmarked, latest bit 1, admission order
  std::vector<uint32_t> kept_;  // unmarked, latest bit 0, any order (drawn uniformly)
  std::vector<size_t> slot_;    // page -> index in kept_, or kNotKept
  std::mt19937_64 rng_;
};

}  // namespace

std::unique_ptr<PagingPolicy> MakeMark0RandomPolicy() {
  return std::make_unique<Mark0RandomPolicy>();
}

}  // namespace kvsim::paging
