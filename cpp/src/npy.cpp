// .npy reading and writing (format: numpy.lib.format; versions 1.0, 2.0, 3.0). No TensorRT, no CUDA.
#include "ffexport/npy.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>

#include "ffexport/errors.h"
#include "files.h"

namespace ffexport {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLength = 6;

bool host_is_little_endian() {
  const uint16_t one = 1;
  uint8_t first = 0;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

// The value after `'key':` in the header dict (a Python literal), starting at its first character.
size_t value_start(const std::string& header, const std::string& key, const std::string& path) {
  for (const char quote : {'\'', '"'}) {
    const std::string quoted = std::string(1, quote) + key + quote;
    const size_t at = header.find(quoted);
    if (at == std::string::npos) continue;
    size_t i = header.find(':', at + quoted.size());
    if (i == std::string::npos) break;
    ++i;
    while (i < header.size() && (header[i] == ' ' || header[i] == '\t')) ++i;
    return i;
  }
  throw InputError(path + " is not a readable .npy file (its header has no '" + key + "')");
}

struct Header {
  char order = '<';
  char kind = 0;
  int itemsize = 0;
  bool fortran = false;
  std::vector<int64_t> shape;
};

Header parse_header(const std::string& header, const std::string& path) {
  Header h;
  const std::string bad = path + " is not a readable .npy file (";
  size_t i = value_start(header, "descr", path);
  if (i >= header.size() || (header[i] != '\'' && header[i] != '"')) {
    throw InputError(path + " holds a structured array; save plain numeric arrays");
  }
  const char quote = header[i];
  const size_t end = header.find(quote, i + 1);
  if (end == std::string::npos) throw InputError(bad + "unterminated descr)");
  const std::string descr = header.substr(i + 1, end - i - 1);
  if (descr.size() < 3) throw InputError(bad + "bad descr '" + descr + "')");
  h.order = descr[0];
  h.kind = descr[1];
  try {
    h.itemsize = std::stoi(descr.substr(2));
  } catch (const std::exception&) {
    throw InputError(bad + "bad descr '" + descr + "')");
  }
  const bool known = (h.kind == 'b' && h.itemsize == 1) ||
                     ((h.kind == 'i' || h.kind == 'u') &&
                      (h.itemsize == 1 || h.itemsize == 2 || h.itemsize == 4 || h.itemsize == 8)) ||
                     (h.kind == 'f' && (h.itemsize == 2 || h.itemsize == 4 || h.itemsize == 8));
  if (!known) {
    throw InputError(path + " has dtype '" + descr + "'; expected booleans, integers or floats (float16/32/64)");
  }
  if (h.order == '>' && h.itemsize > 1) {
    throw InputError(path + " is big-endian ('" + descr + "'); save it with numpy's default little-endian byte order");
  }
  if (h.order != '<' && h.order != '|' && h.order != '=' && h.order != '>') {
    throw InputError(bad + "bad byte order in descr '" + descr + "')");
  }

  i = value_start(header, "fortran_order", path);
  if (header.compare(i, 4, "True") == 0) {
    h.fortran = true;
  } else if (header.compare(i, 5, "False") != 0) {
    throw InputError(bad + "bad fortran_order)");
  }

  i = value_start(header, "shape", path);
  if (i >= header.size() || header[i] != '(') throw InputError(bad + "bad shape)");
  const size_t close = header.find(')', i);
  if (close == std::string::npos) throw InputError(bad + "bad shape)");
  std::stringstream dims(header.substr(i + 1, close - i - 1));
  std::string item;
  while (std::getline(dims, item, ',')) {
    const size_t first = item.find_first_not_of(" \t");
    if (first == std::string::npos) continue;  // the trailing comma of "(5,)"
    const size_t last = item.find_last_not_of(" \tL");
    const std::string digits = item.substr(first, last - first + 1);
    if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) {
      throw InputError(bad + "bad shape)");
    }
    h.shape.push_back(std::stoll(digits));
  }
  return h;
}

// Fortran-ordered elements -> C order.
std::vector<uint8_t> to_c_order(const std::vector<uint8_t>& data, const std::vector<int64_t>& shape, int itemsize) {
  std::vector<uint8_t> out(data.size());
  const size_t rank = shape.size();
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  std::vector<int64_t> index(rank, 0), fstride(rank, 1);
  for (size_t d = 1; d < rank; ++d) fstride[d] = fstride[d - 1] * shape[d - 1];
  for (int64_t c = 0; c < count; ++c) {
    int64_t f = 0;
    for (size_t d = 0; d < rank; ++d) f += index[d] * fstride[d];
    std::memcpy(&out[static_cast<size_t>(c) * itemsize], &data[static_cast<size_t>(f) * itemsize], itemsize);
    for (size_t d = rank; d-- > 0;) {  // next C-order multi-index
      if (++index[d] < shape[d]) break;
      index[d] = 0;
    }
  }
  return out;
}

template <typename T>
T load(const uint8_t* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}

std::string header_text(const std::string& descr, const std::vector<int64_t>& shape) {
  std::string dims;
  for (size_t i = 0; i < shape.size(); ++i) dims += (i ? ", " : "") + std::to_string(shape[i]);
  if (shape.size() == 1) dims += ",";
  std::string text = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  const size_t total = kMagicLength + 2 + 2 + text.size() + 1;  // magic, version, length, text, newline
  text.append((64 - total % 64) % 64, ' ');
  text += '\n';
  return text;
}

void write_raw(const std::string& path, const std::string& descr, const std::vector<int64_t>& shape,
               const void* data, size_t bytes) {
  const std::string text = header_text(descr, shape);
  std::string blob(kMagic, kMagicLength);
  blob += '\x01';
  blob += '\x00';
  blob += static_cast<char>(text.size() & 0xff);
  blob += static_cast<char>((text.size() >> 8) & 0xff);
  blob += text;
  blob.append(static_cast<const char*>(data), bytes);
  write_file_atomic(path, blob);
}

}  // namespace

int64_t NpyArray::size() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string NpyArray::dtype() const {
  if (kind == 'b') return "bool";
  const std::string base = kind == 'i' ? "int" : kind == 'u' ? "uint" : "float";
  return base + std::to_string(itemsize * 8);
}

std::string NpyArray::describe() const {
  std::string dims;
  for (size_t i = 0; i < shape.size(); ++i) dims += (i ? ", " : "") + std::to_string(shape[i]);
  return dtype() + " [" + dims + "]";
}

std::vector<int64_t> NpyArray::to_int64(const std::string& what) const {
  if (kind != 'i' && kind != 'u' && kind != 'b') {
    throw InputError(what + " must hold integers, got " + describe());
  }
  const int64_t n = size();
  std::vector<int64_t> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* p = &data[static_cast<size_t>(i) * itemsize];
    if (kind == 'u' && itemsize == 8) {
      const uint64_t v = load<uint64_t>(p);
      if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        throw InputError(what + " holds a value above the int64 range");
      }
      out[i] = static_cast<int64_t>(v);
      continue;
    }
    switch (itemsize) {
      case 1: out[i] = kind == 'i' ? load<int8_t>(p) : load<uint8_t>(p); break;
      case 2: out[i] = kind == 'i' ? load<int16_t>(p) : load<uint16_t>(p); break;
      case 4: out[i] = kind == 'i' ? static_cast<int64_t>(load<int32_t>(p)) : static_cast<int64_t>(load<uint32_t>(p)); break;
      default: out[i] = load<int64_t>(p); break;
    }
  }
  return out;
}

std::vector<float> NpyArray::to_float32(const std::string& what) const {
  if (kind != 'f') throw InputError(what + " must hold floats, got " + describe());
  const int64_t n = size();
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* p = &data[static_cast<size_t>(i) * itemsize];
    switch (itemsize) {
      case 2: out[i] = half_to_float(load<uint16_t>(p)); break;
      case 4: out[i] = load<float>(p); break;
      default: out[i] = static_cast<float>(load<double>(p)); break;
    }
  }
  return out;
}

NpyArray read_npy(const std::string& path) {
  if (!host_is_little_endian()) throw InputError("this .npy reader needs a little-endian machine");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path + ": no such file");
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string bad = path + " is not a .npy file";
  if (bytes.size() < kMagicLength + 4 || std::memcmp(bytes.data(), kMagic, kMagicLength) != 0) {
    throw InputError(bad + " (no NUMPY magic)");
  }
  const int major = bytes[kMagicLength];
  size_t header_length = 0, offset = 0;
  if (major == 1) {
    header_length = bytes[8] | (bytes[9] << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) throw InputError(bad + " (truncated header)");
    header_length = static_cast<size_t>(bytes[8]) | (static_cast<size_t>(bytes[9]) << 8) |
                    (static_cast<size_t>(bytes[10]) << 16) | (static_cast<size_t>(bytes[11]) << 24);
    offset = 12;
  } else {
    throw InputError(path + " has .npy format version " + std::to_string(major) + "; this reader knows 1, 2 and 3");
  }
  if (bytes.size() < offset + header_length) throw InputError(bad + " (truncated header)");
  const std::string header(bytes.begin() + offset, bytes.begin() + offset + header_length);
  const Header h = parse_header(header, path);

  NpyArray array;
  array.kind = h.kind;
  array.itemsize = h.itemsize;
  array.shape = h.shape;
  const size_t needed = static_cast<size_t>(array.size()) * h.itemsize;
  const size_t have = bytes.size() - offset - header_length;
  if (have != needed) {
    throw InputError(path + " has " + std::to_string(have) + " data bytes; " + array.describe() + " needs " +
                     std::to_string(needed) + (have < needed ? " (truncated)" : ""));
  }
  array.data.assign(bytes.begin() + offset + header_length, bytes.end());
  if (h.fortran && h.shape.size() > 1) array.data = to_c_order(array.data, h.shape, h.itemsize);
  return array;
}

void write_npy(const std::string& path, const std::vector<int64_t>& shape, const std::vector<int64_t>& values) {
  write_raw(path, "<i8", shape, values.data(), values.size() * sizeof(int64_t));
}

void write_npy(const std::string& path, const std::vector<int64_t>& shape, const std::vector<float>& values) {
  write_raw(path, "<f4", shape, values.data(), values.size() * sizeof(float));
}

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  uint32_t bits;
  if (exponent == 31) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  }
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof(x));
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) return sign | 0x7c00u | (x > 0x7f800000u ? 0x200u : 0u);  // inf, nan
  if (x >= 0x477ff000u) return sign | 0x7c00u;                                    // rounds past 65504
  if (x < 0x38800000u) {                                                           // half subnormal or zero
    const uint32_t exponent = x >> 23;
    const uint32_t shift = 126 - exponent;
    if (exponent == 0 || shift > 24) return sign;
    const uint32_t mantissa = (x & 0x7fffffu) | 0x800000u;
    uint32_t h = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1), halfway = 1u << (shift - 1);
    if (rest > halfway || (rest == halfway && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  uint32_t h = (x - 0x38000000u) >> 13;
  const uint32_t rest = x & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

}  // namespace ffexport
