#include "analysis/csv.h"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <unordered_set>

#include "common/error.h"

namespace kvsim::analysis {
namespace {

struct Record {
  std::vector<std::string> fields;
  int line = 0;  // where the record starts
};

// Splits `text` into records. A quoted field may span lines; `line` counts physical lines.
std::vector<Record> SplitRecords(std::string_view text, const std::string& source) {
  std::vector<Record> records;
  std::size_t i = 0;
  int line = 1;
  const std::size_t n = text.size();
  while (i < n) {
    Record record;
    record.line = line;
    std::string field;
    bool record_done = false;
    while (!record_done) {
      field.clear();
      const int field_line = line;
      if (i < n && text[i] == '"') {
        ++i;
        bool closed = false;
        while (i < n) {
          const char c = text[i];
          if (c == '"') {
            if (i + 1 < n && text[i + 1] == '"') {
              field += '"';
              i += 2;
              continue;
            }
            ++i;
            closed = true;
            break;
          }
          if (c == '\n') ++line;
          field += c;
          ++i;
        }
        if (!closed) {
          ThrowInputError("{}:{}: column {}: quoted field is never closed (expected a '\"')",
                          source, field_line, record.fields.size() + 1);
        }
        if (i < n && text[i] != ',' && text[i] != '\n' && text[i] != '\r') {
          ThrowInputError(
              "{}:{}: column {}: text '{}' after a closing quote (expected ',' or end "
              "of line)",
              source, line, record.fields.size() + 1, text[i]);
        }
      } else {
        while (i < n && text[i] != ',' && text[i] != '\n' && text[i] != '\r') {
          if (text[i] == '"') {
            ThrowInputError(
                "{}:{}: column {}: quote inside an unquoted field (expected the whole field "
                "quoted, with '\"\"' for a literal quote)",
                source, line, record.fields.size() + 1);
          }
          field += text[i++];
        }
      }
      record.fields.push_back(field);
      if (i < n && text[i] == ',') {
        ++i;
        continue;
      }
      // End of record: "\n", "\r\n" or end of text.
      if (i < n && text[i] == '\r') ++i;
      if (i < n && text[i] == '\n') {
        ++i;
        ++line;
      }
      record_done = true;
    }
    records.push_back(std::move(record));
  }
  return records;
}

}  // namespace

CsvTable CsvTable::Read(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    ThrowInputError("{}: no such file (expected a result CSV)", path.string());
  }
  return Parse(ReadFileToString(path), path.string());
}

CsvTable CsvTable::Parse(std::string_view text, std::string source) {
  CsvTable table;
  table.source_ = std::move(source);
  std::vector<Record> records = SplitRecords(text, table.source_);
  if (records.empty()) {
    ThrowInputError("{}: file is empty (expected a header row)", table.source_);
  }
  table.header_ = std::move(records.front().fields);
  std::unordered_set<std::string> seen;
  for (std::size_t c = 0; c < table.header_.size(); ++c) {
    const std::string& name = table.header_[c];
    if (name.empty()) {
      ThrowInputError("{}:1: column {}: empty column name in the header", table.source_, c + 1);
    }
    if (!seen.insert(name).second) {
      ThrowInputError("{}:1: column '{}' appears twice in the header", table.source_, name);
    }
  }
  for (std::size_t r = 1; r < records.size(); ++r) {
    Record& record = records[r];
    // A blank line (one empty field) is tolerated only at the end of the file.
    if (record.fields.size() == 1 && record.fields[0].empty() && r + 1 == records.size()) break;
    if (record.fields.size() != table.header_.size()) {
      ThrowInputError("{}:{}: row has {} fields, expected {} (one per header column)",
                      table.source_, record.line, record.fields.size(), table.header_.size());
    }
    table.rows_.push_back(std::move(record.fields));
    table.lines_.push_back(record.line);
  }
  return table;
}

bool CsvTable::HasColumn(std::string_view name) const {
  for (const auto& h : header_) {
    if (h == name) return true;
  }
  return false;
}

std::size_t CsvTable::Column(std::string_view name) const {
  for (std::size_t c = 0; c < header_.size(); ++c) {
    if (header_[c] == name) return c;
  }
  ThrowInputError("{}: missing column '{}' (header has: {})", source_, name,
                  fmt::join(header_, ","));
}

void CsvTable::RequireColumns(const std::vector<std::string_view>& names) const {
  for (std::string_view name : names) Column(name);
}

const std::string& CsvTable::Text(std::size_t row, std::size_t column) const {
  KVSIM_ASSERT(row < rows_.size() && column < header_.size(), "cell ({}, {}) out of range", row,
               column);
  return rows_[row][column];
}

void CsvTable::FailField(std::size_t row, std::size_t column, std::string_view expected) const {
  ThrowInputError("{}:{}: column '{}': '{}' is not {}", source_, lines_[row], header_[column],
                  rows_[row][column], expected);
}

std::optional<double> CsvTable::OptionalNumber(std::size_t row, std::size_t column) const {
  const std::string& text = Text(row, column);
  if (text.empty()) return std::nullopt;
  double value = 0.0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc() || ptr != end || !std::isfinite(value)) {
    FailField(row, column, "a finite number");
  }
  return value;
}

double CsvTable::Number(std::size_t row, std::size_t column) const {
  const std::optional<double> value = OptionalNumber(row, column);
  if (!value) FailField(row, column, "a finite number (the field is empty)");
  return *value;
}

std::int64_t CsvTable::Integer(std::size_t row, std::size_t column) const {
  const std::string& text = Text(row, column);
  std::int64_t value = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end) FailField(row, column, "a whole number");
  return value;
}

CsvWriter::CsvWriter(std::filesystem::path path, std::vector<std::string> header)
    : file_(std::move(path)), columns_(header.size()) {
  AddRow(header);
}

void CsvWriter::AddRow(const std::vector<std::string>& fields) {
  KVSIM_ASSERT(fields.size() == columns_, "CSV row has {} fields, header has {}", fields.size(),
               columns_);
  for (std::size_t c = 0; c < fields.size(); ++c) {
    if (c > 0) file_.out() << ',';
    file_.out() << Quote(fields[c]);
  }
  file_.out() << '\n';
}

void CsvWriter::Commit() { file_.Commit(); }

std::string CsvWriter::Number(double value) {
  if (std::isnan(value)) return "";
  KVSIM_ASSERT(std::isfinite(value), "cannot write {} to a CSV", value);
  return fmt::format("{}", value);  // fmt's default is the shortest round-trip representation
}

std::string CsvWriter::Number(std::optional<double> value) {
  return value ? Number(*value) : std::string();
}

std::string CsvWriter::Quote(std::string_view field) {
  if (field.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(field);
  std::string out = "\"";
  for (char c : field) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

}  // namespace kvsim::analysis
