// Mark&Predict with phase predictions (Antoniadis et al., "Paging with Succinct Predictions",
// ICML 2023, setup 2; card memory-and-paging.md 6.5). The bit of a request says whether its page
// will be requested in the next phase (1 = yes). A marking algorithm: on a fault it evicts the
// earliest-admitted unmarked page whose latest bit is 0 (predicted absent from this phase), else
// the earliest-admitted unmarked page. With correct bits it faults only on each phase's new
// pages, sum_i c_i <= 2 OPT; being a marking algorithm it stays k-competitive with any bits.
#include <memory>

#include "common/error.h"
#include "policies/paging/marking.h"

namespace kvsim::paging {
namespace {

class PhasePredictionPolicy final : public PagingPolicy {
 public:
  void Reset(const PolicySetup& setup) override {
    KVSIM_ASSERT(!setup.bits.empty(), "phase-pred replayed without prediction bits");
    bits_ = setup.bits.data();
    marks_.Reset(setup.requests->num_pages());
    latest_bit_.assign(setup.requests->num_pages(), 0);
    absent_.Reset(setup.requests->num_pages());
    present_.Reset(setup.requests->num_pages());
  }
  void OnHit(int64_t index, uint32_t page) override {
    latest_bit_[page] = bits_[index];
    if (marks_.IsMarked(page)) return;
    marks_.Mark(page);
    (absent_.Contains(page) ? absent_ : present_).Remove(page);
  }
  void OnInsert(int64_t index, uint32_t page) override {
    latest_bit_[page] = bits_[index];
    marks_.Admit(page);
  }
  uint32_t Evict(int64_t, const PinView& pins) override {
    if (absent_.empty() && present_.empty()) {
      marks_.NewPhase(pins,
                      [&](uint32_t p) { (latest_bit_[p] ? present_ : absent_).PushFront(p); });
    }
    PageList& from = absent_.empty() ? present_ : absent_;
    const uint32_t victim = from.Back();
    from.Remove(victim);
    marks_.Drop(victim);
    return victim;
  }

 private:
  const uint8_t* bits_ = nullptr;
  Marks marks_;
  std::vector<uint8_t> latest_bit_;
  PageList absent_;   // unmarked, latest bit 0, admission order
  PageList present_;  // unmarked, latest bit 1, admission order
};

}  // namespace

std::unique_ptr<PagingPolicy> MakePhasePredictionPolicy() {
  return std::make_unique<PhasePredictionPolicy>();
}

}  // namespace kvsim::paging
