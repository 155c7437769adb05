#pragma once
// Byte encodings shared by the storage engine's tables and the primitives' rows: big-endian
// fixed-width integers (byte order = numeric order, for keys) and LEB128 varints.
#include <cstdint>
#include <string>
#include <string_view>

namespace keel::bytes {

inline void put_be64(std::string& out, uint64_t v) {
  for (int i = 7; i >= 0; i--)
    out.push_back(static_cast<char>((v >> (i * 8)) & 0xff));
}
inline void put_be32(std::string& out, uint32_t v) {
  for (int i = 3; i >= 0; i--)
    out.push_back(static_cast<char>((v >> (i * 8)) & 0xff));
}
inline uint64_t get_be64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}
inline uint32_t get_be32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++)
    v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}
inline void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
// Reads a varint from *in, advancing it; false on truncation or overflow.
inline bool get_varint(std::string_view* in, uint64_t* v) {
  *v = 0;
  for (int shift = 0; shift < 64 && !in->empty(); shift += 7) {
    auto b = static_cast<unsigned char>(in->front());
    in->remove_prefix(1);
    *v |= static_cast<uint64_t>(b & 0x7f) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

}  // namespace keel::bytes
