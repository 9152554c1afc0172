#pragma once
// CSV in the subset of RFC 4180 that analysis/RESULTS_FORMAT.md fixes: comma separator, one
// header row, fields quoted with '"' only when they hold a comma, a quote or a line break ('""'
// is a literal quote inside a quoted field), LF or CRLF line ends, '.' decimal point, an empty
// field for a value that does not apply (never "nan").
//
// Reading is header-checked: columns are looked up by name, and every error names the file, the
// line and the column (`sweep.csv:12: column 'budget_tokens': 'abc' is not a number`).
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/atomic_file.h"

namespace kvsim::analysis {

// A whole CSV file held in memory as strings. Immutable once parsed.
class CsvTable {
 public:
  // Reads and parses `path`. Throws InputError naming the path if it cannot be read, is empty
  // (no header), or is malformed (unterminated quote, text after a closing quote, a row whose
  // field count differs from the header's, duplicate or empty column names).
  static CsvTable Read(const std::filesystem::path& path);
  // Parses `text`; `source` names it in error messages (usually the file path).
  static CsvTable Parse(std::string_view text, std::string source);

  const std::string& source() const { return source_; }
  const std::vector<std::string>& header() const { return header_; }
  std::size_t num_rows() const { return rows_.size(); }

  bool HasColumn(std::string_view name) const;
  // Index of column `name`. Throws InputError "<source>: missing column '<name>'".
  std::size_t Column(std::string_view name) const;
  // Throws for the first of `names` the header lacks.
  void RequireColumns(const std::vector<std::string_view>& names) const;

  // Accessors by (data row, column index). Rows are 0-based, in file order.
  const std::string& Text(std::size_t row, std::size_t column) const;
  // A finite double. Throws InputError naming source, line, column and the text found if the
  // field is empty, not a number, or not finite.
  double Number(std::size_t row, std::size_t column) const;
  // As Number(), but an empty field gives std::nullopt ("does not apply").
  std::optional<double> OptionalNumber(std::size_t row, std::size_t column) const;
  // A whole number (optionally signed). Throws like Number().
  std::int64_t Integer(std::size_t row, std::size_t column) const;
  // 1-based line of the file on which data row `row` starts (the header is line 1).
  int Line(std::size_t row) const { return lines_[row]; }

 private:
  [[noreturn]] void FailField(std::size_t row, std::size_t column, std::string_view expected) const;

  std::string source_;
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
  std::vector<int> lines_;
};

// Writes a CSV file atomically (temp file + rename, common/atomic_file.h): nothing appears at
// `path` until Commit(), and a writer destroyed without Commit() leaves no file behind.
//
//   CsvWriter csv(dir / "sweep.csv", {"policy", "budget_tokens"});
//   csv.AddRow({"h2o", CsvWriter::Number(256.0)});
//   csv.Commit();
class CsvWriter {
 public:
  // Throws InputError if `path`'s directory does not exist or the file cannot be opened.
  CsvWriter(std::filesystem::path path, std::vector<std::string> header);

  // Appends one row, quoting fields as needed. REQUIRES: fields.size() == header size.
  void AddRow(const std::vector<std::string>& fields);
  // Flushes and renames into place. Throws InputError naming the path on failure.
  void Commit();

  // Shortest text that parses back to exactly `value` ("0.1", "256", "1e-07"); NaN gives the
  // empty field (RESULTS_FORMAT.md: "nan" is never written). REQUIRES: value is not infinite.
  static std::string Number(double value);
  static std::string Number(std::optional<double> value);
  // Quotes `field` if it holds a comma, a quote or a line break.
  static std::string Quote(std::string_view field);

 private:
  AtomicTextFile file_;
  std::size_t columns_;
};

}  // namespace kvsim::analysis
