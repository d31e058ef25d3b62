#include "frameFusionPluginUtils.h"

#include <atomic>
#include <cstdio>
#include <cstring>
#include <limits>

namespace ffexport
{
namespace plugin
{
namespace
{
std::atomic<nvinfer1::ILoggerFinder*> gLoggerFinder{nullptr};
} // namespace

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    gLoggerFinder.store(finder);
}

void reportError(nvinfer1::IErrorRecorder* recorder, std::string const& message) noexcept
{
    try
    {
        std::string const line = "[ffexport plugin] " + message;
        if (recorder != nullptr)
        {
            recorder->reportError(nvinfer1::ErrorCode::kINVALID_ARGUMENT, line.c_str());
            return;
        }
        nvinfer1::ILoggerFinder* finder = gLoggerFinder.load();
        nvinfer1::ILogger* logger = finder != nullptr ? finder->findLogger() : nullptr;
        if (logger != nullptr)
        {
            logger->log(nvinfer1::ILogger::Severity::kERROR, line.c_str());
            return;
        }
        std::fprintf(stderr, "%s\n", line.c_str());
    }
    catch (...)
    {
        std::fprintf(stderr, "[ffexport plugin] error (and reporting it failed)\n");
    }
}

int32_t toValueType(nvinfer1::DataType type) noexcept
{
    switch (type)
    {
    case nvinfer1::DataType::kFLOAT: return kValueFloat32;
    case nvinfer1::DataType::kHALF: return kValueFloat16;
    case nvinfer1::DataType::kBF16: return kValueBFloat16;
    default: return -1;
    }
}

std::string readIntField(nvinfer1::PluginFieldCollection const* fields, char const* plugin, char const* name,
    int64_t& value) noexcept
{
    try
    {
        if (fields == nullptr)
        {
            return std::string(plugin) + ": no attributes given (needs " + name + ")";
        }
        for (int32_t i = 0; i < fields->nbFields; ++i)
        {
            nvinfer1::PluginField const& field = fields->fields[i];
            if (field.name == nullptr || std::strcmp(field.name, name) != 0)
            {
                continue;
            }
            if (field.data == nullptr || field.length != 1)
            {
                return std::string(plugin) + ": attribute " + name + " must be one integer";
            }
            if (field.type == nvinfer1::PluginFieldType::kINT32)
            {
                value = *static_cast<int32_t const*>(field.data);
                return {};
            }
            if (field.type == nvinfer1::PluginFieldType::kINT64)
            {
                value = *static_cast<int64_t const*>(field.data);
                return {};
            }
            return std::string(plugin) + ": attribute " + name + " must be an int32 or int64 field";
        }
        return std::string(plugin) + ": missing attribute " + name;
    }
    catch (...)
    {
        return std::string("attribute parsing failed");
    }
}

IntFields::IntFields(std::vector<char const*> names)
    : mNames(std::move(names))
    , mValues(mNames.size(), 0)
{
    for (size_t i = 0; i < mNames.size(); ++i)
    {
        mFields.emplace_back(mNames[i], nullptr, nvinfer1::PluginFieldType::kINT32, 1);
    }
    mCollection.nbFields = static_cast<int32_t>(mFields.size());
    mCollection.fields = mFields.data();
}

nvinfer1::PluginFieldCollection const* IntFields::with(std::vector<int64_t> const& values) noexcept
{
    for (size_t i = 0; i < mFields.size() && i < values.size(); ++i)
    {
        int64_t const v = values[i];
        mValues[i] = v > std::numeric_limits<int32_t>::max() ? std::numeric_limits<int32_t>::max()
                                                              : static_cast<int32_t>(v);
        mFields[i].data = &mValues[i];
    }
    return &mCollection;
}

nvinfer1::PluginFieldCollection const* IntFields::names() noexcept
{
    for (auto& field : mFields)
    {
        field.data = nullptr;
    }
    return &mCollection;
}

} // namespace plugin
} // namespace ffexport
