#include "sim/paging/registry.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <string>
#include <utility>

#include "common/error.h"

namespace kvsim::paging {

#define KVSIM_PAGING_POLICY(name, factory, predictions) std::unique_ptr<PagingPolicy> factory();
#include "policies/paging/all.def"
#undef KVSIM_PAGING_POLICY

namespace {

struct Entry {
  PolicyInfo info;
  std::unique_ptr<PagingPolicy> (*factory)();
};

const std::vector<Entry>& Entries() {
  static const std::vector<Entry> entries = {
#define KVSIM_PAGING_POLICY(name, factory, predictions) {{name, Predictions::predictions}, factory},
#include "policies/paging/all.def"
#undef KVSIM_PAGING_POLICY
  };
  return entries;
}

}  // namespace

const std::vector<PolicyInfo>& PagingPolicies() {
  static const std::vector<PolicyInfo> infos = [] {
    std::vector<PolicyInfo> out;
    for (const Entry& e : Entries()) {
      out.push_back(e.info);
      out.back().self_managed = e.factory()->ManagesResidency();
    }
    return out;
  }();
  return infos;
}

const PolicyInfo& FindPagingPolicy(std::string_view name) {
  for (const PolicyInfo& info : PagingPolicies()) {
    if (info.name == name) return info;
  }
  std::vector<std::string> names;
  for (const PolicyInfo& info : PagingPolicies()) names.push_back(info.name);
  ThrowInputError("unknown paging policy '{}', expected one of: {}", name, fmt::join(names, ", "));
}

std::string CanonicalPagingPolicyName(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  // libCacheSim's names for the same algorithms.
  static constexpr std::pair<std::string_view, std::string_view> kAliases[] = {
      {"belady", "opt"}, {"s3-fifo", "s3fifo"}, {"2q", "twoq"}, {"tinylfu", "wtinylfu"}};
  for (const auto& [alias, registered] : kAliases) {
    if (lower == alias) lower = std::string(registered);
  }
  for (const PolicyInfo& info : PagingPolicies()) {
    if (info.name == lower) return lower;
  }
  return std::string(FindPagingPolicy(name).name);  // throws, naming the registered policies
}

std::unique_ptr<PagingPolicy> MakePagingPolicy(std::string_view name) {
  FindPagingPolicy(name);
  for (const Entry& e : Entries()) {
    if (e.info.name == name) return e.factory();
  }
  return nullptr;
}

}  // namespace kvsim::paging
