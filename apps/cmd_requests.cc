// `kvsim requests TRACE -o OUT`: page-request sequences extracted from a trace's full attention
// (sim/paging/README.md), in the plain kvsim format or libCacheSim's csv / oracleGeneral.
#include <fmt/core.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "apps/command.h"
#include "common/error.h"
#include "sim/paging/extract.h"
#include "sim/paging/request_sequence.h"

namespace kvsim::apps {
namespace {

struct RequestsArgs {
  std::string trace;
  std::string out;
  std::string format = "plain";
  std::string rule = "topk:32";
  std::string grouping = "max";
  std::string streams = "per-head";
  int64_t page_tokens = 1;
};

// `out` for a single stream, else `out` with ".<stream>" before its extension.
std::filesystem::path StreamPath(const std::filesystem::path& out,
                                 const paging::RequestSequence& seq,
                                 size_t streams) {
  if (streams == 1) return out;
  std::filesystem::path path = out;
  path.replace_filename(
      fmt::format("{}.{}{}", out.stem().string(), seq.stream, out.extension().string()));
  return path;
}

}  // namespace

void RegisterRequestsCommand(CLI::App& app) {
  auto args = std::make_shared<RequestsArgs>();
  CLI::App* cmd = app.add_subcommand(
      "requests",
      "Extract page-request sequences from a trace's full attention (paging experiments).");
  cmd->add_option("trace", args->trace, "trace file (HDF5, traces/FORMAT.md)")->required();
  cmd->add_option("-o,--out", args->out,
                  "output file; csv/oracle with several streams write one file per stream, "
                  "named OUT with .<stream> before the extension")
      ->required();
  cmd->add_option("--format", args->format,
                  "plain (kvsim, all streams in one file), csv (libCacheSim csv) or oracle "
                  "(also oracleGeneral: libCacheSim's oracleGeneral binary; name the file "
                  "*.oracleGeneral.bin so libCacheSim recognises it)")
      ->capture_default_str();
  cmd->add_option("--rule", args->rule,
                  "topk:K, threshold:TAU (absolute weight), relative:KAPPA (weight >= KAPPA/n) "
                  "or coverage:P (smallest set covering a mass fraction P)")
      ->capture_default_str();
  cmd->add_option("--group", args->grouping, "combine a KV head's query heads by max or sum")
      ->capture_default_str();
  cmd->add_option("--page-tokens", args->page_tokens, "tokens per page")->capture_default_str();
  cmd->add_option("--streams", args->streams, "per-head, merged or both")->capture_default_str();
  cmd->callback([args] {
    if (args->format == "oracleGeneral") args->format = "oracle";
    if (args->format != "plain" && args->format != "csv" && args->format != "oracle") {
      ThrowInputError("--format '{}': expected plain, csv or oracle (= oracleGeneral)",
                      args->format);
    }
    paging::ExtractOptions options;
    paging::ParseRequestRule(args->rule, "--rule", options);
    options.grouping = paging::ParseHeadGrouping(args->grouping, "--group");
    options.streams = paging::ParseStreamSet(args->streams, "--streams");
    options.page_tokens = args->page_tokens;
    options.Validate();
    const auto streams = paging::LoadRequestStreams(args->trace, options);
    int64_t requests = 0;
    for (const auto& seq : streams) requests += seq.requests();
    if (args->format == "plain") {
      paging::WriteRequestsFile(args->out, streams);
      fmt::print("{}: {} streams, {} requests\n", args->out, streams.size(), requests);
      return;
    }
    for (const auto& seq : streams) {
      const auto path = StreamPath(args->out, seq, streams.size());
      if (args->format == "csv") {
        paging::WriteLibCacheSimCsv(path, seq);
      } else {
        paging::WriteOracleGeneral(path, seq);
        if (path.filename().string().find("oracleGeneral") == std::string::npos) {
          fmt::print(stderr,
                     "note: {}: libCacheSim detects oracleGeneral (and its Belady requires it) by "
                     "'oracleGeneral' in the file name, e.g. r.oracleGeneral.bin\n",
                     path.string());
        }
      }
      fmt::print("{}: stream {}, {} requests\n", path.string(), seq.stream, seq.requests());
    }
  });
}

}  // namespace kvsim::apps
