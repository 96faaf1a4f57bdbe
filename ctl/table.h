#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace tern {

// Left-aligned columns separated by two spaces, header in upper case.
class Table {
 public:
  explicit Table(std::vector<std::string> header) : header_(std::move(header)) {}
  // Cells are made printable() (core/text.h).
  void add(std::vector<std::string> row);
  void print(std::ostream& out) const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace tern
