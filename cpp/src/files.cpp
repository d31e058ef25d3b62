#include "files.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <system_error>

#include "ffexport/errors.h"

namespace fs = std::filesystem;

namespace ffexport {

std::string join_path(const std::string& base, const std::string& relative) {
  return (fs::path(base) / fs::path(relative)).string();
}

bool is_file(const std::string& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

bool is_directory(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec);
}

int64_t file_size(const std::string& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  return ec ? -1 : static_cast<int64_t>(size);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path + ": no such file or not readable");
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_file_atomic(const std::string& path, const std::string& data) {
  std::error_code ec;
  if (fs::exists(path, ec)) throw InputError(path + " already exists; remove it first");
  const fs::path target(path);
  if (target.has_parent_path()) fs::create_directories(target.parent_path(), ec);
  const std::string tmp = (target.parent_path() / ("." + target.filename().string() + ".partial")).string();
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    out.close();
    if (!out) {
      std::remove(tmp.c_str());
      throw InputError("cannot write " + path);
    }
  }
  fs::rename(tmp, target, ec);
  if (ec) {
    std::remove(tmp.c_str());
    throw InputError("cannot write " + path + " (" + ec.message() + ")");
  }
}

}  // namespace ffexport
