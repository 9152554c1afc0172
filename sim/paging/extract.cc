#include "sim/paging/extract.h"

#include <fmt/format.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <numeric>

#include "common/atomic_file.h"
#include "common/error.h"
#include "common/tensor.h"
#include "traces/trace_io.h"

namespace kvsim::paging {
namespace {

// Query rows processed together: bounds the grouped-weights block to kRowBlock x T floats.
constexpr int64_t kRowBlock = 128;

bool ParseNumber(std::string_view text, double& value) {
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  return ec == std::errc() && ptr == end && std::isfinite(value);
}

// Requested pages (ascending, unique) of every decode step of one (layer, KV head).
std::vector<std::vector<uint64_t>> ExtractHead(const traces::LayerTensors& layer,
                                               int kv_head,
                                               int group,
                                               int64_t prompt_len,
                                               const ExtractOptions& options) {
  const ConstMatrixMap keys = layer.keys.Head(kv_head);
  const int64_t total = keys.rows();
  const int64_t decode = total - prompt_len;
  const float scale = 1.0f / std::sqrt(static_cast<float>(keys.cols()));
  std::vector<std::vector<uint64_t>> steps(static_cast<size_t>(decode));
  std::vector<float> weights;
  for (int64_t row0 = 0; row0 < decode; row0 += kRowBlock) {
    const int64_t rows = std::min(kRowBlock, decode - row0);
    const int64_t cols = prompt_len + row0 + rows;  // keys any row of the block can see
    RowMatrixXf grouped = RowMatrixXf::Zero(rows, cols);
    for (int g = 0; g < group; ++g) {
      const ConstMatrixMap queries = layer.queries.Head(kv_head * group + g);
      RowMatrixXf logits =
          (queries.middleRows(prompt_len + row0, rows) * keys.topRows(cols).transpose()) * scale;
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t visible = prompt_len + row0 + r + 1;  // causal: keys 0..t
        auto row = logits.row(r).head(visible);
        const float max = row.maxCoeff();
        row = (row.array() - max).exp();
        row /= row.sum();
        auto acc = grouped.row(r).head(visible);
        if (options.grouping == HeadGrouping::kSum) {
          acc += row;
        } else {
          acc = acc.cwiseMax(row);
        }
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t visible = prompt_len + row0 + r + 1;
      weights.assign(grouped.row(r).data(), grouped.row(r).data() + visible);
      std::vector<uint64_t>& pages = steps[static_cast<size_t>(row0 + r)];
      for (int64_t token : SelectTokens(weights, options)) {
        const auto page = static_cast<uint64_t>(token / options.page_tokens);
        if (pages.empty() || pages.back() != page) pages.push_back(page);
      }
    }
  }
  return steps;
}

}  // namespace

void ExtractOptions::Validate() const {
  if (rule == RequestRule::kTopK && top_k < 1) {
    ThrowInputError("--rule topk:{}: expected K >= 1", top_k);
  }
  if ((rule == RequestRule::kThreshold || rule == RequestRule::kRelative) && !(threshold >= 0)) {
    ThrowInputError("--rule threshold {}: expected a finite value >= 0", threshold);
  }
  if (rule == RequestRule::kCoverage && !(coverage > 0 && coverage <= 1)) {
    ThrowInputError("--rule coverage:{}: expected a fraction in (0, 1]", coverage);
  }
  if (page_tokens < 1) ThrowInputError("--page-tokens {}: expected >= 1", page_tokens);
}

void ParseRequestRule(std::string_view spec, std::string_view flag, ExtractOptions& options) {
  const size_t colon = spec.find(':');
  const std::string_view name = spec.substr(0, colon);
  const std::string_view value = colon == std::string_view::npos ? "" : spec.substr(colon + 1);
  double number = 0;
  if (colon == std::string_view::npos || !ParseNumber(value, number)) {
    ThrowInputError(
        "{} '{}': expected topk:K, threshold:TAU, relative:KAPPA or coverage:P with a number", flag,
        spec);
  }
  if (name == "topk") {
    if (number != std::floor(number) || number < 1) {
      ThrowInputError("{} '{}': expected an integer K >= 1", flag, spec);
    }
    options.rule = RequestRule::kTopK;
    options.top_k = static_cast<int64_t>(number);
  } else if (name == "threshold" || name == "relative") {
    if (number < 0) ThrowInputError("{} '{}': expected a threshold >= 0", flag, spec);
    options.rule = name == "threshold" ? RequestRule::kThreshold : RequestRule::kRelative;
    options.threshold = number;
  } else if (name == "coverage") {
    if (!(number > 0 && number <= 1)) {
      ThrowInputError("{} '{}': expected a mass fraction in (0, 1]", flag, spec);
    }
    options.rule = RequestRule::kCoverage;
    options.coverage = number;
  } else {
    ThrowInputError("{} '{}': unknown rule '{}', expected topk, threshold, relative or coverage",
                    flag, spec, name);
  }
}

HeadGrouping ParseHeadGrouping(std::string_view text, std::string_view flag) {
  if (text == "max") return HeadGrouping::kMax;
  if (text == "sum") return HeadGrouping::kSum;
  ThrowInputError("{} '{}': expected max or sum", flag, text);
}

StreamSet ParseStreamSet(std::string_view text, std::string_view flag) {
  if (text == "per-head") return StreamSet::kPerHead;
  if (text == "merged") return StreamSet::kMerged;
  if (text == "both") return StreamSet::kBoth;
  ThrowInputError("{} '{}': expected per-head, merged or both", flag, text);
}

std::vector<int64_t> SelectTokens(const std::vector<float>& weights,
                                  const ExtractOptions& options) {
  const auto n = static_cast<int64_t>(weights.size());
  std::vector<int64_t> selected;
  auto heavier = [&](int64_t a, int64_t b) {
    const float wa = weights[static_cast<size_t>(a)];
    const float wb = weights[static_cast<size_t>(b)];
    return wa != wb ? wa > wb : a < b;
  };
  switch (options.rule) {
    case RequestRule::kTopK: {
      selected.resize(static_cast<size_t>(n));
      std::iota(selected.begin(), selected.end(), 0);
      if (n > options.top_k) {
        std::nth_element(selected.begin(), selected.begin() + options.top_k, selected.end(),
                         heavier);
        selected.resize(static_cast<size_t>(options.top_k));
      }
      break;
    }
    case RequestRule::kThreshold:
    case RequestRule::kRelative: {
      const double tau = options.rule == RequestRule::kThreshold
                             ? options.threshold
                             : options.threshold / static_cast<double>(n);
      for (int64_t j = 0; j < n; ++j) {
        if (weights[static_cast<size_t>(j)] >= tau) selected.push_back(j);
      }
      break;
    }
    case RequestRule::kCoverage: {
      std::vector<int64_t> order(static_cast<size_t>(n));
      std::iota(order.begin(), order.end(), 0);
      std::sort(order.begin(), order.end(), heavier);
      double total = 0;
      for (float w : weights) total += w;
      const double target = options.coverage * total;
      double sum = 0;
      for (int64_t j : order) {
        selected.push_back(j);
        sum += weights[static_cast<size_t>(j)];
        if (sum >= target) break;
      }
      break;
    }
  }
  std::sort(selected.begin(), selected.end());
  return selected;
}

std::vector<RequestSequence> ExtractRequests(
    const traces::TraceMeta& meta,
    const std::function<traces::LayerTensors(int layer)>& read_layer,
    const ExtractOptions& options) {
  options.Validate();
  const models::ModelShape& shape = meta.shape;
  const int group = shape.GroupSize();
  const int64_t decode = meta.total_len - meta.prompt_len;
  std::vector<int64_t> positions(static_cast<size_t>(decode));
  std::iota(positions.begin(), positions.end(), meta.prompt_len);
  const bool per_head = options.streams != StreamSet::kMerged;
  const bool merged = options.streams != StreamSet::kPerHead;

  std::vector<RequestSequence> streams;
  std::vector<std::vector<uint64_t>> merged_steps(static_cast<size_t>(decode));
  std::vector<uint64_t> scratch;
  for (int l = 0; l < shape.layers; ++l) {
    const traces::LayerTensors layer = read_layer(l);
    std::vector<std::vector<std::vector<uint64_t>>> heads(static_cast<size_t>(shape.kv_heads));
    tbb::parallel_for(0, shape.kv_heads, [&](int h) {
      heads[static_cast<size_t>(h)] = ExtractHead(layer, h, group, meta.prompt_len, options);
    });
    for (int h = 0; h < shape.kv_heads; ++h) {
      const auto& steps = heads[static_cast<size_t>(h)];
      if (per_head) {
        RequestSequence seq;
        seq.stream = fmt::format("L{}H{}", l, h);
        seq.page_tokens = options.page_tokens;
        seq.page_bytes = options.page_tokens * shape.KvBytesPerTokenPerHead();
        for (int64_t s = 0; s < decode; ++s) {
          seq.AddStep(positions[static_cast<size_t>(s)], steps[static_cast<size_t>(s)]);
        }
        streams.push_back(std::move(seq));
      }
      if (merged) {
        for (int64_t s = 0; s < decode; ++s) {
          auto& into = merged_steps[static_cast<size_t>(s)];
          const auto& add = steps[static_cast<size_t>(s)];
          scratch.clear();
          std::set_union(into.begin(), into.end(), add.begin(), add.end(),
                         std::back_inserter(scratch));
          into.swap(scratch);
        }
      }
    }
  }
  if (merged) {
    RequestSequence seq;
    seq.stream = "merged";
    seq.page_tokens = options.page_tokens;
    seq.page_bytes = options.page_tokens * shape.KvBytesPerToken();
    for (int64_t s = 0; s < decode; ++s) {
      seq.AddStep(positions[static_cast<size_t>(s)], merged_steps[static_cast<size_t>(s)]);
    }
    streams.push_back(std::move(seq));
  }
  return streams;
}

std::vector<RequestSequence> ExtractRequests(const traces::Trace& trace,
                                             const ExtractOptions& options) {
  return ExtractRequests(
      trace.meta(), [&](int l) { return trace.layer(l); }, options);
}

std::vector<RequestSequence> LoadRequestStreams(const std::string& path,
                                                const ExtractOptions& options) {
  RegisterInputFile(path);
  std::ifstream in(path, std::ios::binary);
  if (!in) ThrowInputError("{}: cannot open the file", path);
  std::string head(14, '\0');
  in.read(head.data(), static_cast<std::streamsize>(head.size()));
  head.resize(static_cast<size_t>(in.gcount()));
  if (head.starts_with("kvsim-requests")) return ReadRequestsFile(path);
  if (head.starts_with("\x89HDF\r\n\x1a\n")) {
    const traces::TraceReader reader(path);
    return ExtractRequests(
        reader.meta(), [&](int l) { return reader.ReadLayer(l); }, options);
  }
  ThrowInputError(
      "{}: neither a kvsim trace (HDF5) nor a kvsim requests file (first line "
      "'kvsim-requests 1')",
      path);
}

}  // namespace kvsim::paging
