#pragma once
// The eviction-policy registry: names -> factories, generated from policies/all.def. Adding a
// policy = one policies/<name>.cc (class in an anonymous namespace + one factory function) plus
// one line `KVSIM_POLICY("name", MakeName)` in all.def. No static self-registration (a static
// library may drop it silently).
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "policies/eviction_policy.h"
#include "policies/policy_params.h"

namespace kvsim::policies {

// A factory reads its parameters with the PolicyParams getters, calls params.Validate(), and
// returns a fresh instance for setup.layer. Throws InputError for bad parameters.
using PolicyFactory = std::unique_ptr<EvictionPolicy> (*)(const PolicyParams& params,
                                                          const PolicySetup& setup);

#define KVSIM_POLICY(name, factory) \
  std::unique_ptr<EvictionPolicy> factory(const PolicyParams& params, const PolicySetup& setup);
#include "policies/all.def"
#undef KVSIM_POLICY

struct PolicyInfo {
  std::string_view name;
  PolicyFactory factory;
};

// Every registered policy, in all.def order.
std::span<const PolicyInfo> RegisteredPolicies();
std::vector<std::string> PolicyNames();
// Throws InputError "unknown policy 'x': expected one of full, random, ..." naming `context`.
const PolicyInfo& FindPolicy(std::string_view name, std::string_view context = "--policy");

// Builds `name` for setup.layer; parameter errors name the policy.
std::unique_ptr<EvictionPolicy> MakePolicy(std::string_view name,
                                           const PolicyParams& params,
                                           const PolicySetup& setup);
// Checks a policy name and its parameters before a run starts (builds one throw-away instance
// on a small stand-in setup). Returns the non-default parameter string (sweep.csv `params`).
std::string CheckPolicy(std::string_view name, const PolicyParams& params);

}  // namespace kvsim::policies
