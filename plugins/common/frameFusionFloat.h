/*
 * float16 / bfloat16 <-> float32 conversions on the host, bit-exact with torch's `.to(dtype)`
 * (round to nearest even; NaN stays NaN). Header-only, no CUDA needed: the CPU reference uses them.
 */
#pragma once

#include <cstdint>
#include <cstring>

namespace ffexport
{

inline float bitsToFloat(uint32_t bits)
{
    float value;
    std::memcpy(&value, &bits, sizeof(value));
    return value;
}

inline uint32_t floatToBits(float value)
{
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof(bits));
    return bits;
}

inline float bfloat16ToFloat(uint16_t bits)
{
    return bitsToFloat(uint32_t{bits} << 16);
}

inline uint16_t floatToBFloat16(float value)
{
    uint32_t const bits = floatToBits(value);
    if ((bits & 0x7fffffffu) > 0x7f800000u)
    {
        return static_cast<uint16_t>((bits >> 16) | 0x40u); // quiet NaN
    }
    uint32_t const rounding = 0x7fffu + ((bits >> 16) & 1u);
    return static_cast<uint16_t>((bits + rounding) >> 16);
}

inline float float16ToFloat(uint16_t half)
{
    uint32_t const sign = uint32_t{half & 0x8000u} << 16;
    uint32_t exponent = (half >> 10) & 0x1fu;
    uint32_t mantissa = half & 0x3ffu;
    if (exponent == 0x1fu)
    {
        return bitsToFloat(sign | 0x7f800000u | (mantissa << 13));
    }
    if (exponent == 0)
    {
        if (mantissa == 0)
        {
            return bitsToFloat(sign);
        }
        // subnormal: normalize
        exponent = 127 - 15 + 1;
        while ((mantissa & 0x400u) == 0)
        {
            mantissa <<= 1;
            --exponent;
        }
        mantissa &= 0x3ffu;
        return bitsToFloat(sign | (exponent << 23) | (mantissa << 13));
    }
    return bitsToFloat(sign | ((exponent + 127 - 15) << 23) | (mantissa << 13));
}

inline uint16_t floatToFloat16(float value)
{
    uint32_t const bits = floatToBits(value);
    uint16_t const sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
    uint32_t const magnitude = bits & 0x7fffffffu;
    if (magnitude > 0x7f800000u)
    {
        return static_cast<uint16_t>(sign | 0x7e00u); // NaN
    }
    if (magnitude >= 0x47800000u) // >= 65536: rounds to infinity (65520 and up also do, below)
    {
        return static_cast<uint16_t>(sign | 0x7c00u);
    }
    if (magnitude < 0x38800000u) // below 2^-14: subnormal or zero
    {
        if (magnitude < 0x33000000u) // below 2^-25: rounds to zero
        {
            return sign;
        }
        uint32_t const exponent = magnitude >> 23;
        uint32_t const mantissa = (magnitude & 0x7fffffu) | 0x800000u;
        uint32_t const shift = 126 - exponent; // 14 + (113 - exponent) - 1
        uint32_t const halfMantissa = mantissa >> (shift);
        uint32_t const remainder = mantissa & ((1u << shift) - 1u);
        uint32_t const halfway = 1u << (shift - 1);
        uint32_t result = halfMantissa;
        if (remainder > halfway || (remainder == halfway && (halfMantissa & 1u)))
        {
            ++result;
        }
        return static_cast<uint16_t>(sign | result);
    }
    // normal: rebias the exponent, round the mantissa to 10 bits (a carry may bump the exponent)
    uint32_t const rebased = magnitude - (uint32_t{127 - 15} << 23);
    uint32_t const rounding = 0xfffu + ((rebased >> 13) & 1u);
    uint32_t const result = (rebased + rounding) >> 13;
    return static_cast<uint16_t>(sign | (result > 0x7c00u ? 0x7c00u : result));
}

} // namespace ffexport
