// File helpers shared by the runtime's sources (internal; not part of the public API).
#pragma once

#include <cstdint>
#include <string>

namespace ffexport {

// `base/relative` (relative may hold '/').
std::string join_path(const std::string& base, const std::string& relative);
bool is_file(const std::string& path);
bool is_directory(const std::string& path);
// Size in bytes, or -1 when the file does not exist.
int64_t file_size(const std::string& path);
// The whole file; InputError when it cannot be read.
std::string read_file(const std::string& path);
// Write `data` to a temporary file beside `path`, then rename it into place; refuses to replace an
// existing file (InputError "... already exists").
void write_file_atomic(const std::string& path, const std::string& data);

}  // namespace ffexport
