// Randomized Marker (Fiat et al. 1991): on a fault evict a uniformly random unmarked page;
// (2 H_k - 1)-competitive. Draws come only from PolicySetup::seed, so a replay is reproducible.
#include <memory>
#include <random>
#include <vector>

#include "policies/paging/marking.h"

namespace kvsim::paging {
namespace {

class RandomMarkerPolicy final : public PagingPolicy {
 public:
  void Reset(const PolicySetup& setup) override {
    marks_.Reset(setup.requests->num_pages());
    unmarked_.clear();
    slot_.assign(setup.requests->num_pages(), 0);
    rng_.seed(setup.seed);
  }
  void OnHit(int64_t, uint32_t page) override {
    if (marks_.IsMarked(page)) return;
    marks_.Mark(page);
    Take(slot_[page]);
  }
  void OnInsert(int64_t, uint32_t page) override { marks_.Admit(page); }
  uint32_t Evict(int64_t, const PinView& pins) override {
    if (unmarked_.empty()) {
      marks_.NewPhase(pins, [&](uint32_t p) {
        slot_[p] = unmarked_.size();
        unmarked_.push_back(p);
      });
    }
    // A 53-bit uniform draw scaled to [0, n): portable, unlike libstdc++'s
    // uniform_int_distribution whose algorithm is not specified across standard libraries.
    const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53;
    const auto pick = static_cast<size_t>(u * static_cast<double>(unmarked_.size()));
    const uint32_t victim = unmarked_[pick];
    Take(pick);
    marks_.Drop(victim);
    return victim;
  }

 private:
  // Removes unmarked_[at] by moving the last entry into its place.
  void Take(size_t at) {
    const uint32_t last = unmarked_.back();
    unmarked_[at] = last;
    slot_[last] = at;
    unmarked_.pop_back();
  }

  Marks marks_;
  std::vector<uint32_t> unmarked_;
  std::vector<size_t> slot_;  // page -> index in unmarked_ (meaningful while unmarked)
  std::mt19937_64 rng_;
};

}  // namespace

std::unique_ptr<PagingPolicy> MakeRandomMarkerPolicy() {
  return std::make_unique<RandomMarkerPolicy>();
}

}  // namespace kvsim::paging
