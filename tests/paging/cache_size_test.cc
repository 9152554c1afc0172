// --cache-sizes spellings: pages, fractions of the distinct pages (0.1f, 0.1) and bytes
// (KiB/MiB/GiB, KB/MB/GB 1024-based as in libCacheSim), resolved per stream; bad spellings name the
// flag.
#include "sim/paging/cache_size.h"

#include <gtest/gtest.h>

#include "common/error.h"
#include "tests/paging/paging_test_util.h"

namespace kvsim::paging {
namespace {

TEST(CacheSize, ParsesPagesFractionsAndBytes) {
  RequestSequence seq = testing::SequenceOf({1, 2, 3, 1, 4, 2, 5, 6, 7, 8, 9, 10});  // 10 pages
  seq.page_bytes = 1024;
  auto pages = [&](const char* text) {
    return ResolveCacheSize(ParseCacheSize(text, "--cache-sizes"), seq);
  };
  EXPECT_EQ(pages("7"), 7);
  EXPECT_EQ(pages("0"), 0);
  EXPECT_EQ(pages("0.25f"), 2);  // floor(0.25 * 10)
  EXPECT_EQ(pages("1f"), 10);
  EXPECT_EQ(pages("0.1F"), 1);
  EXPECT_EQ(pages("0.35"), 3);  // a '.' makes a fraction, as in libCacheSim
  EXPECT_EQ(pages("1.5f"), 15);
  EXPECT_EQ(pages("4096B"), 4);
  EXPECT_EQ(pages("5000b"), 4);  // whole pages only
  EXPECT_EQ(pages("64KiB"), 64);
  EXPECT_EQ(pages("64KB"), 64);
  EXPECT_EQ(pages("1MiB"), 1024);
  EXPECT_EQ(pages("1GiB"), 1024 * 1024);
  EXPECT_EQ(DistinctPages(seq), 10);
  for (const char* bad :
       {"", "-1", "-0.5f", "f", "x", "1.5.2", "10TB", "-3KiB", "KiB", "inff", "nan"}) {
    try {
      ParseCacheSize(bad, "--cache-sizes");
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("--cache-sizes '"), std::string::npos) << e.what();
    }
  }
  seq.page_bytes = 0;
  EXPECT_THROW(pages("1KiB"), InputError);
  EXPECT_EQ(pages("3"), 3);
}

}  // namespace
}  // namespace kvsim::paging
