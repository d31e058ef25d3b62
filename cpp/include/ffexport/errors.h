// Errors of the C++ runtime: one class per kind, each a one-line message a user can act on.
//
// Mirrors ffexport/errors.py: InputError (a bad build directory, inputs folder or option; exit
// code 2) and RunError (an engine cannot be loaded or run here; exit code 8). The program prints
// "error: <stage>: <message>" on one line and exits with the code; nothing aborts.
#pragma once

#include <iostream>
#include <stdexcept>
#include <string>

namespace ffexport {

class Error : public std::runtime_error {
 public:
  Error(std::string stage, int exit_code, const std::string& message)
      : std::runtime_error(message), stage_(std::move(stage)), exit_code_(exit_code) {}
  const std::string& stage() const noexcept { return stage_; }
  int exit_code() const noexcept { return exit_code_; }

 private:
  std::string stage_;
  int exit_code_;
};

// A user mistake: missing or malformed files, inputs that do not fit the build, bad options.
class InputError : public Error {
 public:
  explicit InputError(const std::string& message) : Error("input", 2, message) {}
};

// The build cannot run here: TensorRT/GPU mismatch, an engine TensorRT refuses, a CUDA failure.
class RunError : public Error {
 public:
  explicit RunError(const std::string& message) : Error("run", 8, message) {}
};

// What every message about a damaged build ends with (the same words as the Python runtime).
inline constexpr const char* kRebuild = "the build is corrupt or incomplete; rebuild it with `ffexport build`";

// A command-line tool's main: runs `body` and turns every error into one line on stderr and an exit
// code (an Error's own; 1 for std::bad_alloc and the like), never an abort.
template <typename Body>
int guarded_main(Body&& body) {
  try {
    return body();
  } catch (const Error& e) {
    std::cerr << "error: " << e.stage() << ": " << e.what() << "\n";
    return e.exit_code();
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace ffexport
