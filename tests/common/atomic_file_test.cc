#include "common/atomic_file.h"

#include <gtest/gtest.h>

#include "common/error.h"
#include "common/test_util.h"

namespace kvsim {
namespace {

TEST(AtomicTextFile, CommitMovesContentIntoPlace) {
  testing::TempDir dir;
  WriteFileAtomically(dir.File("a.txt"), "hello\n");
  EXPECT_EQ(ReadFileToString(dir.File("a.txt")), "hello\n");
  EXPECT_EQ(dir.Entries(), std::vector<std::string>{"a.txt"});
}

TEST(AtomicTextFile, AbandonedFileLeavesNothingBehind) {
  testing::TempDir dir;
  {
    AtomicTextFile file(dir.File("b.txt"));
    file.out() << "partial";
  }
  EXPECT_TRUE(dir.Entries().empty());
}

TEST(AtomicTextFile, MissingDirectoryIsAnInputErrorNamingThePath) {
  testing::TempDir dir;
  try {
    AtomicTextFile file(dir.File("nope/c.txt"));
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("nope"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace kvsim
