/*
 * What both FrameFusion TensorRT plugins share: error reporting that never throws or aborts (the
 * logger TensorRT hands the library through setLoggerFinder, the error recorder of the execution
 * context, else stderr), attribute parsing, and TensorRT <-> ValueType mapping.
 */
#pragma once

#include "frameFusionValidate.h"

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>
#include <vector>

namespace ffexport
{
namespace plugin
{

constexpr char const* kNamespace = "ffexport";
constexpr char const* kVersion = "1";

//! Remember the logger finder TensorRT passes to setLoggerFinder (library entry point).
void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;

//! Report an error: the recorder if given (else the library's logger, else stderr). Never throws.
void reportError(nvinfer1::IErrorRecorder* recorder, std::string const& message) noexcept;

//! ValueType code of a TensorRT type, or -1 for types the plugins do not take.
int32_t toValueType(nvinfer1::DataType type) noexcept;

//! Read the int attribute `name` (kINT32 or kINT64 fields; the ONNX parser passes ints as kINT32).
//! Returns "" and sets `value`, or a message when the field is missing or malformed.
std::string readIntField(nvinfer1::PluginFieldCollection const* fields, char const* plugin, char const* name,
    int64_t& value) noexcept;

//! A PluginFieldCollection over int32 attributes the plugin owns (for getFieldNames and serialization).
class IntFields
{
public:
    explicit IntFields(std::vector<char const*> names);
    IntFields(IntFields const&) = delete;
    IntFields& operator=(IntFields const&) = delete;
    //! Point the fields at these values (size == names), for getFieldsToSerialize.
    nvinfer1::PluginFieldCollection const* with(std::vector<int64_t> const& values) noexcept;
    //! The fields with no data, for getFieldNames.
    nvinfer1::PluginFieldCollection const* names() noexcept;

private:
    std::vector<char const*> mNames;
    std::vector<int32_t> mValues;
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mCollection{};
};

} // namespace plugin
} // namespace ffexport
