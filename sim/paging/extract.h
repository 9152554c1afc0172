#pragma once
// Request extraction (card memory-and-paging.md 6.1): turns the full attention of a trace into
// page-request sequences. At decode step t (query position t, t in [prompt_len, T)) the query
// heads of a KV head attend causally over keys 0..t (softmax(q . k / sqrt(d)), the full cache);
// their weights are grouped per key by max or sum over the g query heads; a token is requested
// when the rule selects it; page floor(j / page_tokens) is requested when any of its tokens is.
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "sim/paging/request_sequence.h"
#include "traces/trace.h"

namespace kvsim::paging {

enum class RequestRule {
  kTopK,       // the `top_k` largest grouped weights (ties: lower position first)
  kThreshold,  // grouped weight >= threshold
  kRelative,   // grouped weight >= threshold / n_t, n_t = t + 1 keys (1.0 = CORM's "above 1/t")
  kCoverage,   // the fewest largest weights whose sum >= coverage * (sum of grouped weights)
};
enum class HeadGrouping { kMax, kSum };
enum class StreamSet { kPerHead, kMerged, kBoth };

struct ExtractOptions {
  RequestRule rule = RequestRule::kTopK;
  int64_t top_k = 32;
  double threshold = 1.0;  // kThreshold: absolute weight; kRelative: kappa
  double coverage = 0.9;
  HeadGrouping grouping = HeadGrouping::kMax;
  int64_t page_tokens = 1;
  StreamSet streams = StreamSet::kPerHead;

  // Throws InputError naming the option unless every field is in range.
  void Validate() const;
};

// Parses "topk:K", "threshold:TAU", "relative:KAPPA" or "coverage:P" into `options`; throws
// InputError naming `flag` otherwise.
void ParseRequestRule(std::string_view spec, std::string_view flag, ExtractOptions& options);
HeadGrouping ParseHeadGrouping(std::string_view text, std::string_view flag);
StreamSet ParseStreamSet(std::string_view text, std::string_view flag);

// Token positions (ascending) the rule requests from one step's grouped weights.
std::vector<int64_t> SelectTokens(const std::vector<float>& weights, const ExtractOptions& options);

// Per-head streams "L<l>H<h>" (layer-major) and/or one "merged" stream (a page is requested at a
// step when any (layer, KV head) requests it; its page_bytes count every layer and KV head).
// `read_layer(l)` returns layer l's tensors; it is called once per layer, in order.
std::vector<RequestSequence> ExtractRequests(
    const traces::TraceMeta& meta,
    const std::function<traces::LayerTensors(int layer)>& read_layer,
    const ExtractOptions& options);
std::vector<RequestSequence> ExtractRequests(const traces::Trace& trace,
                                             const ExtractOptions& options);

// Streams from `path`: a trace (HDF5, traces/FORMAT.md; requests extracted with `options`, one
// layer in memory at a time) or a plain kvsim requests file (README.md; `options` unused).
// Throws InputError naming the file if it is neither.
std::vector<RequestSequence> LoadRequestStreams(const std::string& path,
                                                const ExtractOptions& options);

}  // namespace kvsim::paging
