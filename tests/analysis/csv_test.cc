#include "analysis/csv.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "common/error.h"
#include "common/test_util.h"

namespace kvsim::analysis {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::string ErrorOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "(no InputError)";
}

TEST(CsvTable, ParsesQuotedFieldsAndCountsLines) {
  const CsvTable t = CsvTable::Parse(
      "name,value\r\nplain,1\r\n\"with, comma\",2\n\"say "
      "\"\"hi\"\"\",3\n\"two\nlines\",4\nlast,5\n",
      "t.csv");
  ASSERT_EQ(t.num_rows(), 5u);
  EXPECT_EQ(t.Text(0, 0), "plain");
  EXPECT_EQ(t.Text(1, 0), "with, comma");
  EXPECT_EQ(t.Text(2, 0), "say \"hi\"");
  EXPECT_EQ(t.Text(3, 0), "two\nlines");
  EXPECT_EQ(t.Line(0), 2);
  EXPECT_EQ(t.Line(3), 5);
  EXPECT_EQ(t.Line(4), 7);  // the quoted line break counts
  EXPECT_EQ(t.Number(4, t.Column("value")), 5.0);
}

TEST(CsvTable, EmptyFieldIsAbsentNumber) {
  const CsvTable t = CsvTable::Parse("a,b\n,0.25\n", "t.csv");
  EXPECT_FALSE(t.OptionalNumber(0, 0).has_value());
  EXPECT_EQ(t.OptionalNumber(0, 1), 0.25);
  EXPECT_THAT(ErrorOf([&] { t.Number(0, 0); }), HasSubstr("t.csv:2: column 'a'"));
}

TEST(CsvTable, MissingColumnNamesFileAndColumn) {
  const CsvTable t = CsvTable::Parse("a,b\n1,2\n", "results/sweep.csv");
  EXPECT_TRUE(t.HasColumn("b"));
  EXPECT_FALSE(t.HasColumn("budget"));
  const std::string error = ErrorOf([&] { t.RequireColumns({"a", "budget"}); });
  EXPECT_THAT(error, HasSubstr("results/sweep.csv"));
  EXPECT_THAT(error, HasSubstr("missing column 'budget'"));
}

TEST(CsvTable, BadNumberNamesFileLineColumnAndText) {
  const CsvTable t = CsvTable::Parse("x,y\n1,2\n3,abc\n4,nan\n5,1e999\n6,2.5\n", "m.csv");
  EXPECT_THAT(ErrorOf([&] { t.Number(1, 1); }), HasSubstr("m.csv:3: column 'y': 'abc'"));
  EXPECT_THAT(ErrorOf([&] { t.Number(2, 1); }), HasSubstr("m.csv:4: column 'y': 'nan'"));
  EXPECT_THAT(ErrorOf([&] { t.Number(3, 1); }), HasSubstr("m.csv:5"));
  EXPECT_THAT(ErrorOf([&] { t.Integer(4, 1); }), HasSubstr("'2.5' is not a whole number"));
  EXPECT_EQ(t.Integer(4, 0), 6);
}

TEST(CsvTable, RejectsMalformedText) {
  EXPECT_THAT(ErrorOf([] { CsvTable::Parse("", "e.csv"); }), HasSubstr("e.csv: file is empty"));
  EXPECT_THAT(ErrorOf([] { CsvTable::Parse("a,b\n1,2,3\n", "f.csv"); }),
              HasSubstr("f.csv:2: row has 3 fields, expected 2"));
  EXPECT_THAT(ErrorOf([] { CsvTable::Parse("a,b\n\"open,2\n", "q.csv"); }),
              HasSubstr("q.csv:2: column 1: quoted field is never closed"));
  EXPECT_THAT(ErrorOf([] { CsvTable::Parse("a,b\n\"x\"y,2\n", "q.csv"); }),
              HasSubstr("after a closing quote"));
  EXPECT_THAT(ErrorOf([] { CsvTable::Parse("a,b\nx\"y,2\n", "q.csv"); }),
              HasSubstr("quote inside an unquoted field"));
  EXPECT_THAT(ErrorOf([] { CsvTable::Parse("a,a\n1,2\n", "d.csv"); }),
              HasSubstr("column 'a' appears twice"));
  EXPECT_THAT(ErrorOf([] { CsvTable::Parse("a,b\n1,2\n\n3,4\n", "b.csv"); }),
              HasSubstr("b.csv:3: row has 1 fields"));
}

TEST(CsvTable, ReadNamesAMissingFile) {
  EXPECT_THAT(ErrorOf([] { CsvTable::Read("/nonexistent/sweep.csv"); }),
              HasSubstr("/nonexistent/sweep.csv: no such file"));
}

TEST(CsvWriter, RoundTripsFieldsAndNumbersExactly) {
  testing::TempDir dir;
  const std::vector<double> numbers = {0.1, 1.0 / 3.0, 1e-300, -2.5e17, 256.0, 0.0};
  {
    CsvWriter csv(dir.path() / "out.csv", {"text", "number"});
    csv.AddRow({"a,b", CsvWriter::Number(std::nan(""))});
    csv.AddRow({"say \"x\"\nnext", CsvWriter::Number(std::nullopt)});
    for (double x : numbers) csv.AddRow({"n", CsvWriter::Number(x)});
    csv.Commit();
  }
  const CsvTable t = CsvTable::Read(dir.path() / "out.csv");
  ASSERT_EQ(t.num_rows(), numbers.size() + 2);
  EXPECT_EQ(t.Text(0, 0), "a,b");
  EXPECT_EQ(t.Text(0, 1), "");  // NaN is written as the empty field, never "nan"
  EXPECT_EQ(t.Text(1, 0), "say \"x\"\nnext");
  for (std::size_t i = 0; i < numbers.size(); ++i) {
    EXPECT_EQ(t.Number(i + 2, 1), numbers[i]) << t.Text(i + 2, 1);
  }
  EXPECT_EQ(CsvWriter::Number(256.0), "256");
  EXPECT_EQ(CsvWriter::Quote("plain"), "plain");
}

TEST(CsvWriter, LeavesNoFileWithoutCommit) {
  testing::TempDir dir;
  {
    CsvWriter csv(dir.path() / "out.csv", {"a"});
    csv.AddRow({"1"});
  }
  EXPECT_THAT(dir.Entries(), IsEmpty());
}

}  // namespace
}  // namespace kvsim::analysis
