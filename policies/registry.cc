#include "policies/registry.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <array>

#include "common/error.h"
#include "models/model_shape.h"

namespace kvsim::policies {
namespace {

#define KVSIM_POLICY(name, factory) PolicyInfo{name, &factory},
constexpr std::array kPolicies = {
#include "policies/all.def"
};
#undef KVSIM_POLICY

}  // namespace

std::span<const PolicyInfo> RegisteredPolicies() { return kPolicies; }

std::vector<std::string> PolicyNames() {
  std::vector<std::string> names;
  for (const PolicyInfo& info : kPolicies) names.emplace_back(info.name);
  return names;
}

const PolicyInfo& FindPolicy(std::string_view name, std::string_view context) {
  for (const PolicyInfo& info : kPolicies) {
    if (info.name == name) return info;
  }
  ThrowInputError("{}: unknown policy '{}': expected one of {}", context, name,
                  fmt::join(PolicyNames(), ", "));
}

std::unique_ptr<EvictionPolicy> MakePolicy(std::string_view name,
                                           const PolicyParams& params,
                                           const PolicySetup& setup) {
  const PolicyInfo& info = FindPolicy(name);
  PolicyParams named = params;
  named.set_policy_name(std::string(info.name));
  std::unique_ptr<EvictionPolicy> policy = info.factory(named, setup);
  KVSIM_ASSERT(policy != nullptr, "factory of {} returned null", info.name);
  return policy;
}

std::string CheckPolicy(std::string_view name, const PolicyParams& params) {
  const PolicyInfo& info = FindPolicy(name);
  PolicySetup setup;
  setup.shape = models::ShapePreset("stories260k");
  setup.prompt_len = 64;
  setup.total_len = 80;
  PolicyParams named = params;
  named.set_policy_name(std::string(info.name));
  info.factory(named, setup);
  return named.NonDefaultString();
}

}  // namespace kvsim::policies
