#pragma once
// Paging policies by name. Each policy is one file in policies/paging/ defining a factory, listed
// once in policies/paging/all.def.
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "sim/paging/engine.h"

namespace kvsim::paging {

// Which prediction bits a policy reads (sim/paging/predictions.h).
enum class Predictions { kNone, kDiscard, kPhase };

struct PolicyInfo {
  std::string name;
  Predictions predictions = Predictions::kNone;
  // PagingPolicy::ManagesResidency(): classic semantics only in experiments (RunExperiment).
  bool self_managed = false;
};

// Every registered policy, in all.def order.
const std::vector<PolicyInfo>& PagingPolicies();
// Throws InputError listing the known names if `name` is unknown.
const PolicyInfo& FindPagingPolicy(std::string_view name);
// The registered name for `name` as a user may spell it: any case, and libCacheSim's names for
// the same algorithms (`belady` = `opt`, `s3-fifo` = `s3fifo`, `2q` = `twoq`, `tinylfu` =
// `wtinylfu`). Throws InputError, listing the names, if none matches.
std::string CanonicalPagingPolicyName(std::string_view name);
std::unique_ptr<PagingPolicy> MakePagingPolicy(std::string_view name);

}  // namespace kvsim::paging
