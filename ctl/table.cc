#include "ctl/table.h"

#include <algorithm>

#include "core/text.h"

namespace tern {

void Table::add(std::vector<std::string> row) {
  // Cells can hold what an agent or an app wrote: no escape sequence reaches
  // the terminal, no newline breaks a row.
  for (auto& cell : row) cell = printable(cell, 4096);
  rows_.push_back(std::move(row));
}

void Table::print(std::ostream& out) const {
  std::vector<size_t> width(header_.size(), 0);
  auto measure = [&](const std::vector<std::string>& row) {
    for (size_t i = 0; i < row.size() && i < width.size(); ++i) width[i] = std::max(width[i], row[i].size());
  };
  measure(header_);
  for (const auto& r : rows_) measure(r);
  auto emit = [&](const std::vector<std::string>& row) {
    std::string line;
    for (size_t i = 0; i < row.size() && i < width.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    out << line << "\n";
  };
  emit(header_);
  for (const auto& r : rows_) emit(r);
}

}  // namespace tern
