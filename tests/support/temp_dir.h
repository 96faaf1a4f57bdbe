#pragma once

#include <filesystem>
#include <string>

namespace tern::testing {

// A fresh, empty directory under $TMPDIR for one test, removed with
// everything in it when the object goes. Tests put every file they make in
// one, so nothing is left behind and parallel runs never share a path.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // The path of `name` inside the directory (not created).
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  // Writes `text` to `name` inside the directory and returns its path.
  std::string write(const std::string& name, const std::string& text) const;

 private:
  std::filesystem::path path_;
};

// The whole content of a file; empty when it cannot be read.
std::string read_file(const std::string& path);

}  // namespace tern::testing
