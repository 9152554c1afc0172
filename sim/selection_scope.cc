#include "sim/selection_scope.h"

namespace kvsim::sim {
namespace {

thread_local const SelectionScope* current_scope = nullptr;

}  // namespace

SelectionScope::SelectionScope(TieRule rule, uint64_t seed, SelectionTally* tally)
    : rule_(rule), seed_(seed), tally_(tally), previous_(current_scope) {
  current_scope = this;
}

SelectionScope::~SelectionScope() { current_scope = previous_; }

const SelectionScope* SelectionScope::Current() { return current_scope; }

}  // namespace kvsim::sim
