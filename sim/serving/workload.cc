#include "sim/serving/workload.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "analysis/csv.h"
#include "common/error.h"

namespace kvsim::serving {

const char* WorkloadKindName(WorkloadSpec::Kind kind) {
  switch (kind) {
    case WorkloadSpec::Kind::kPoisson:
      return "poisson";
    case WorkloadSpec::Kind::kGamma:
      return "gamma";
    case WorkloadSpec::Kind::kFile:
      return "file";
  }
  return "?";
}

WorkloadSpec::Kind ParseWorkloadKind(const std::string& text, const std::string& context) {
  if (text == "poisson") return WorkloadSpec::Kind::kPoisson;
  if (text == "gamma") return WorkloadSpec::Kind::kGamma;
  if (text == "file") return WorkloadSpec::Kind::kFile;
  ThrowInputError("{}: '{}': expected poisson, gamma or file", context, text);
}

void WorkloadSpec::Validate(const std::string& context) const {
  if (kind == Kind::kFile) {
    if (file.empty()) ThrowInputError("{}: arrivals = \"file\" needs file = \"...\"", context);
    return;
  }
  if (!(rate_per_s > 0.0) || !std::isfinite(rate_per_s)) {
    ThrowInputError("{}: rate {} must be a positive number of requests per second", context,
                    rate_per_s);
  }
  if (!(cv > 0.0) || !std::isfinite(cv) || cv > 100.0) {
    ThrowInputError("{}: cv {} must be in (0, 100]", context, cv);
  }
  if (num_requests < 1 || num_requests > 10'000'000) {
    ThrowInputError("{}: requests {} must be in [1, 10000000]", context, num_requests);
  }
  if (trace_choice != "random" && trace_choice != "cycle") {
    ThrowInputError("{}: trace_choice '{}': expected random or cycle", context, trace_choice);
  }
}

namespace {

std::vector<ServingRequest> ReadArrivalFile(const std::filesystem::path& path,
                                            const std::vector<std::string>& trace_names) {
  const analysis::CsvTable table = analysis::CsvTable::Read(path);
  const size_t arrival = table.Column("arrival_s");
  const size_t trace = table.Column("trace");
  std::vector<ServingRequest> requests;
  for (size_t row = 0; row < table.num_rows(); ++row) {
    ServingRequest r;
    r.arrival_s = table.Number(row, arrival);
    if (r.arrival_s < 0.0) {
      ThrowInputError("{}:{}: column 'arrival_s': {} is negative", path.string(), table.Line(row),
                      r.arrival_s);
    }
    const std::string& name = table.Text(row, trace);
    const auto it = std::find(trace_names.begin(), trace_names.end(), name);
    if (it == trace_names.end()) {
      ThrowInputError("{}:{}: column 'trace': '{}' is not in the scenario's traces ({})",
                      path.string(), table.Line(row), name, fmt::join(trace_names, ", "));
    }
    r.trace = static_cast<int>(it - trace_names.begin());
    requests.push_back(r);
  }
  if (requests.empty()) ThrowInputError("{}: no requests", path.string());
  return requests;
}

}  // namespace

std::vector<ServingRequest> MakeRequests(const WorkloadSpec& spec,
                                         const std::vector<std::string>& trace_names) {
  KVSIM_ASSERT(!trace_names.empty(), "empty trace set");
  std::vector<ServingRequest> requests;
  if (spec.kind == WorkloadSpec::Kind::kFile) {
    requests = ReadArrivalFile(spec.file, trace_names);
  } else {
    std::mt19937_64 rng(spec.seed);
    // Inter-arrival times: exponential (Poisson), or gamma with the same mean 1/rate and
    // coefficient of variation cv (shape 1/cv^2). Trace choice draws from the same generator,
    // after the arrival time, so the sequence is fixed by the seed alone.
    std::exponential_distribution<double> exponential(spec.rate_per_s);
    const double shape = 1.0 / (spec.cv * spec.cv);
    std::gamma_distribution<double> gamma(shape, 1.0 / (spec.rate_per_s * shape));
    std::uniform_int_distribution<int> pick(0, static_cast<int>(trace_names.size()) - 1);
    double t = 0.0;
    for (int64_t i = 0; i < spec.num_requests; ++i) {
      t += spec.kind == WorkloadSpec::Kind::kPoisson ? exponential(rng) : gamma(rng);
      ServingRequest r;
      r.arrival_s = t;
      r.trace = spec.trace_choice == "cycle"
                    ? static_cast<int>(i % static_cast<int64_t>(trace_names.size()))
                    : pick(rng);
      requests.push_back(r);
    }
  }
  std::stable_sort(
      requests.begin(), requests.end(),
      [](const ServingRequest& a, const ServingRequest& b) { return a.arrival_s < b.arrival_s; });
  for (size_t i = 0; i < requests.size(); ++i) requests[i].id = static_cast<int64_t>(i);
  return requests;
}

}  // namespace kvsim::serving
