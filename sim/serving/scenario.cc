#include "sim/serving/scenario.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "analysis/csv.h"
#include "analysis/toml_file.h"
#include "common/atomic_file.h"
#include "common/error.h"
#include "policies/registry.h"
#include "sim/budget.h"

namespace kvsim::serving {

int64_t ParseBytes(const std::string& text, const std::string& context) {
  static const std::vector<std::pair<std::string, int64_t>> kUnits = {
      {"GiB", int64_t{1} << 30}, {"MiB", int64_t{1} << 20}, {"KiB", int64_t{1} << 10}, {"B", 1}};
  int64_t unit = 1;
  std::string number = text;
  for (const auto& [suffix, factor] : kUnits) {
    if (text.size() > suffix.size() && text.ends_with(suffix)) {
      unit = factor;
      number = text.substr(0, text.size() - suffix.size());
      break;
    }
  }
  size_t used = 0;
  double value = 0.0;
  try {
    value = std::stod(number, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  const double bytes = value * static_cast<double>(unit);
  if (used != number.size() || number.empty() || !(bytes >= 1.0) || bytes > 1e15) {
    ThrowInputError("{}: '{}' is not a size: expected bytes such as 4096, 512KiB, 64MiB or 2GiB",
                    context, text);
  }
  return static_cast<int64_t>(bytes);
}

void ServingScenario::Validate(const std::string& context) const {
  if (traces.empty()) ThrowInputError("{}: no trace given (--trace or 'traces')", context);
  if (policies.empty()) ThrowInputError("{}: no policy given (--policy or 'policies')", context);
  if (rates.empty())
    ThrowInputError("{}: no arrival rate given (--rate or workload.rate)", context);
  if (capacities_bytes.empty()) {
    ThrowInputError("{}: no pool capacity given (--capacity or pool.capacity)", context);
  }
  for (const analysis::PolicySpec& p : policies) policies::CheckPolicy(p.name, p.params);
  if (budget) (void)sim::Budget::Parse(*budget, context + ": budget");
  for (double r : rates) {
    WorkloadSpec w = workload;
    w.rate_per_s = r;
    w.Validate(context + ": workload");
  }
  if (threads < 0 || threads > 4096) {
    ThrowInputError("{}: threads {} must be in [0, 4096]", context, threads);
  }
  scheduler.Validate(context + ": [scheduler]/[pool]");
  cost.Validate(context.c_str());
}

namespace {

class TableReader {
 public:
  TableReader(const toml::table& table, std::string where, std::vector<std::string_view> keys)
      : table_(table), where_(std::move(where)) {
    for (const auto& [key, value] : table) {
      if (std::find(keys.begin(), keys.end(), key.str()) == keys.end()) {
        ThrowInputError("{}: unknown key '{}': expected one of {}", where_, key.str(),
                        fmt::join(keys, ", "));
      }
    }
  }
  const toml::node* Get(std::string_view key) const { return table_.get(key); }
  std::string Field(std::string_view key) const { return fmt::format("{}.{}", where_, key); }

  void String(std::string_view key, std::string& out) const {
    if (const toml::node* n = Get(key)) {
      if (!n->is_string()) ThrowInputError("{}: expected a string", Field(key));
      out = n->as_string()->get();
    }
  }
  void Number(std::string_view key, double& out) const {
    if (const toml::node* n = Get(key)) {
      if (!n->is_number()) ThrowInputError("{}: expected a number", Field(key));
      out = n->is_integer() ? static_cast<double>(n->as_integer()->get())
                            : n->as_floating_point()->get();
    }
  }
  template <typename Int>
  void Integer(std::string_view key, Int& out, int64_t lo, int64_t hi) const {
    if (const toml::node* n = Get(key)) {
      if (!n->is_integer() || n->as_integer()->get() < lo || n->as_integer()->get() > hi) {
        ThrowInputError("{}: expected an integer in [{}, {}]", Field(key), lo, hi);
      }
      out = static_cast<Int>(n->as_integer()->get());
    }
  }
  // A scalar or an array of scalars, each as text.
  std::vector<std::string> List(std::string_view key) const {
    std::vector<std::string> items;
    const toml::node* n = Get(key);
    if (n == nullptr) return items;
    const auto text = [&](const toml::node& v) -> std::string {
      if (const auto* s = v.as_string()) return s->get();
      if (const auto* i = v.as_integer()) return std::to_string(i->get());
      if (const auto* f = v.as_floating_point()) return analysis::CsvWriter::Number(f->get());
      ThrowInputError("{}: expected strings or numbers", Field(key));
    };
    if (const toml::array* a = n->as_array()) {
      for (const toml::node& v : *a) items.push_back(text(v));
      if (items.empty()) ThrowInputError("{}: empty list", Field(key));
    } else {
      items.push_back(text(*n));
    }
    return items;
  }
  const toml::table* Table(std::string_view key) const {
    const toml::node* n = Get(key);
    if (n == nullptr) return nullptr;
    if (!n->is_table()) ThrowInputError("{}: expected a table [{}]", Field(key), key);
    return n->as_table();
  }

 private:
  const toml::table& table_;
  std::string where_;
};

double ParseRate(const std::string& text, const std::string& field) {
  size_t used = 0;
  double v = 0.0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || !(v > 0.0) || !std::isfinite(v)) {
    ThrowInputError("{}: '{}': expected a positive number of requests per second", field, text);
  }
  return v;
}

}  // namespace

ServingScenario ReadScenarioFile(const std::filesystem::path& path) {
  const toml::table root = analysis::ParseTomlFile(path);
  const std::string file = path.string();
  const std::filesystem::path base = path.parent_path();
  const auto relative = [&](const std::string& p) {
    const std::filesystem::path q = p;
    return (q.is_absolute() ? q : base / q).string();
  };
  ServingScenario s;
  const TableReader top(root, file,
                        {"traces", "policies", "policy", "budget", "seed", "threads", "workload",
                         "pool", "scheduler", "cost"});
  for (const std::string& t : top.List("traces")) s.traces.push_back(relative(t));
  if (top.Get("policies") != nullptr) {
    s.policies.clear();
    for (const std::string& p : top.List("policies")) s.policies.push_back({p, {}});
  }
  if (const toml::node* node = top.Get("policy")) {
    if (top.Get("policies") == nullptr) s.policies.clear();
    const toml::array* tables = node->as_array();
    if (tables == nullptr) ThrowInputError("{}: 'policy' must be [[policy]] tables", file);
    for (const toml::node& entry : *tables) {
      const toml::table* t = entry.as_table();
      if (t == nullptr) ThrowInputError("{}: 'policy' must be [[policy]] tables", file);
      const TableReader pr(*t, file + ": [[policy]]", {"name", "params"});
      analysis::PolicySpec spec;
      pr.String("name", spec.name);
      if (spec.name.empty()) ThrowInputError("{}: every [[policy]] needs name = \"...\"", file);
      if (const toml::table* params = pr.Table("params")) {
        for (const auto& [key, value] : *params) {
          const TableReader one(*params, file + ": params", {key.str()});
          spec.params.Set(std::string(key.str()), one.List(key.str()).at(0));
        }
      }
      s.policies.push_back(std::move(spec));
    }
  }
  if (top.Get("budget") != nullptr) s.budget = top.List("budget").at(0);
  top.Integer("seed", s.seed, 0, std::numeric_limits<int64_t>::max());
  top.Integer("threads", s.threads, 0, 4096);
  if (const toml::table* w = top.Table("workload")) {
    const TableReader r(*w, file + ": [workload]",
                        {"arrivals", "rate", "cv", "requests", "seed", "trace_choice", "file"});
    std::string kind = "poisson";
    r.String("arrivals", kind);
    s.workload.kind = ParseWorkloadKind(kind, r.Field("arrivals"));
    if (r.Get("rate") != nullptr) {
      s.rates.clear();
      for (const std::string& v : r.List("rate")) s.rates.push_back(ParseRate(v, r.Field("rate")));
    }
    r.Number("cv", s.workload.cv);
    r.Integer("requests", s.workload.num_requests, 1, 10'000'000);
    r.Integer("seed", s.workload.seed, 0, std::numeric_limits<int64_t>::max());
    r.String("trace_choice", s.workload.trace_choice);
    std::string arrivals_file;
    r.String("file", arrivals_file);
    if (!arrivals_file.empty()) s.workload.file = relative(arrivals_file);
  }
  if (const toml::table* p = top.Table("pool")) {
    const TableReader r(*p, file + ": [pool]",
                        {"capacity", "block_tokens", "on_full", "share", "min_budget_tokens"});
    for (const std::string& v : r.List("capacity")) {
      s.capacities_bytes.push_back(ParseBytes(v, r.Field("capacity")));
    }
    r.Integer("block_tokens", s.block_tokens, 1, 65536);
    std::string text;
    r.String("on_full", text);
    if (!text.empty()) s.scheduler.on_full = ParseOnFull(text, r.Field("on_full"));
    text.clear();
    r.String("share", text);
    if (!text.empty()) s.scheduler.share = ParseBudgetShare(text, r.Field("share"));
    r.Integer("min_budget_tokens", s.scheduler.min_budget_tokens, 1, 1'000'000'000);
  }
  if (const toml::table* c = top.Table("scheduler")) {
    const TableReader r(*c, file + ": [scheduler]", {"iteration_tokens", "max_running"});
    r.Integer("iteration_tokens", s.scheduler.iteration_tokens, 1, 1'000'000);
    r.Integer("max_running", s.scheduler.max_running, 1, 1'000'000);
  }
  if (const toml::table* c = top.Table("cost")) {
    const TableReader r(*c, file + ": [cost]",
                        {"hbm_bytes_per_s", "peak_flops", "swap_bytes_per_s", "overhead_s",
                         "params", "weight_bytes"});
    r.Number("hbm_bytes_per_s", s.cost.hbm_bytes_per_s);
    r.Number("peak_flops", s.cost.peak_flops);
    r.Number("swap_bytes_per_s", s.cost.swap_bytes_per_s);
    r.Number("overhead_s", s.cost.overhead_s);
    r.Number("params", s.cost.params);
    r.Number("weight_bytes", s.cost.weight_bytes);
  }
  return s;
}

}  // namespace kvsim::serving
