/*
 * The IPluginV3 boilerplate both FrameFusion plugins share, as CRTP bases (header only):
 *
 *   FrameFusionPluginBase<Derived, Attributes>  capability lookup, clone, name/version/namespace,
 *                                               output count, attachToContext, serialization
 *   FrameFusionPluginCreatorBase<Plugin>        the IPluginCreatorV3One: name/version/namespace,
 *                                               field names, createPlugin (parse, validate, new)
 *   PluginIdentity<Interface, Plugin>           name/version/namespace, for both of them
 *
 * A plugin class provides:
 *   static constexpr char const* kName;                  plugin name
 *   static constexpr int32_t kInputs, kOutputs;          numbers of inputs and outputs
 *   static constexpr char const* kInputNames;            "visual, patch_ids" (for messages)
 *   using Attributes = ...;                              its int attributes (a plain struct)
 *   static constexpr std::array<IntAttribute<Attributes>, N> kFields;  ONNX name -> struct member
 *   static std::string validateAttributes(Attributes const&);          "" when fine
 *   std::string check(nvinfer1::Dims const&, nvinfer1::DataType) const;  first input's dims and type
 *                                                        (onShapeChange calls it; befriend the base)
 *   a constructor from Attributes const&
 * and its own shapes, formats, workspace and enqueue (the helpers guarded, arity, linearTensor and
 * launched below keep their error handling alike). Like every plugin method, the methods here
 * never throw across the library boundary and never abort (noexcept; errors are reported and an
 * error status or nullptr is returned).
 */
#pragma once

#include "frameFusionPluginUtils.h"

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>
#include <vector>

namespace ffexport
{
namespace plugin
{

//! One int attribute of a plugin: its field (ONNX attribute) name and the member that holds it.
template <typename Attributes>
struct IntAttribute
{
    char const* name;
    int64_t Attributes::*member;
};

//! The field names of `fields`, in order (for IntFields).
template <typename Fields>
std::vector<char const*> attributeNames(Fields const& fields)
{
    std::vector<char const*> names;
    for (auto const& field : fields)
    {
        names.push_back(field.name);
    }
    return names;
}

//! getPluginName/Version/Namespace of `Interface` (IPluginV3OneCore or IPluginCreatorV3One) for Plugin.
template <typename Interface, typename Plugin>
class PluginIdentity : public Interface
{
public:
    char const* getPluginName() const noexcept override
    {
        return Plugin::kName;
    }
    char const* getPluginVersion() const noexcept override
    {
        return kVersion;
    }
    char const* getPluginNamespace() const noexcept override
    {
        return kNamespace;
    }
};

//! "1 input", "2 inputs".
inline std::string countOf(int32_t count, char const* what)
{
    return std::to_string(count) + " " + what + (count == 1 ? "" : "s");
}

template <typename Derived, typename Attributes>
class FrameFusionPluginBase : public nvinfer1::IPluginV3,
                              public PluginIdentity<nvinfer1::IPluginV3OneCore, Derived>,
                              public nvinfer1::IPluginV3OneBuild,
                              public nvinfer1::IPluginV3OneRuntime
{
public:
    explicit FrameFusionPluginBase(Attributes const& attributes)
        : mAttributes(attributes)
        , mFields(attributeNames(Derived::kFields))
    {
    }
    ~FrameFusionPluginBase() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override
    {
        switch (type)
        {
        case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
        case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
        case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }

    nvinfer1::IPluginV3* clone() noexcept override
    {
        try
        {
            FrameFusionPluginBase* copy = new Derived(mAttributes);
            copy->mRecorder = mRecorder;
            return copy;
        }
        catch (...)
        {
            reportError(mRecorder, std::string(Derived::kName) + ": out of memory in clone");
            return nullptr;
        }
    }

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override
    {
        return Derived::kOutputs;
    }

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept override
    {
        return guarded("onShapeChange",
            [&]() -> std::string
            {
                std::string const error = arity(nbInputs, nbOutputs, false);
                return error.empty() ? static_cast<Derived const*>(this)->check(in[0].dims, in[0].type) : error;
            });
    }

    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override
    {
        auto* copy = static_cast<FrameFusionPluginBase*>(clone());
        if (copy != nullptr && context != nullptr)
        {
            copy->mRecorder = context->getErrorRecorder();
        }
        return copy;
    }

    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override
    {
        try
        {
            std::vector<int64_t> values;
            for (auto const& field : Derived::kFields)
            {
                values.push_back(mAttributes.*field.member);
            }
            return mFields.with(values);
        }
        catch (...)
        {
            reportError(mRecorder, std::string(Derived::kName) + ": getFieldsToSerialize failed");
            return nullptr;
        }
    }

protected:
    //! Runs `body` (returning "" or an error message): reports the message and returns -1, else 0.
    //! An exception is reported as "<name>: <method> failed" (and -1 returned).
    template <typename Body>
    int32_t guarded(char const* method, Body&& body) const noexcept
    {
        try
        {
            std::string const error = body();
            if (!error.empty())
            {
                reportError(mRecorder, error);
                return -1;
            }
            return 0;
        }
        catch (...)
        {
            reportError(mRecorder, std::string(Derived::kName) + ": " + method + " failed");
            return -1;
        }
    }

    //! "" when the tensor counts are the plugin's, else "<name>: takes 2 inputs [(names)] and gives 2 outputs".
    std::string arity(int32_t nbInputs, int32_t nbOutputs, bool withNames) const
    {
        if (nbInputs == Derived::kInputs && nbOutputs == Derived::kOutputs)
        {
            return {};
        }
        return std::string(Derived::kName) + ": takes " + countOf(Derived::kInputs, "input")
            + (withNames ? std::string(" (") + Derived::kInputNames + ")" : std::string()) + " and gives "
            + countOf(Derived::kOutputs, "output");
    }

    //! For supportsFormatCombination: tensor `pos` of `inOut` when the counts are the plugin's, `pos` is
    //! in range and the tensor is linear; else nullptr (the combination is refused).
    nvinfer1::PluginTensorDesc const* linearTensor(
        int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) const noexcept
    {
        if (nbInputs != Derived::kInputs || nbOutputs != Derived::kOutputs || pos < 0
            || pos >= Derived::kInputs + Derived::kOutputs)
        {
            return nullptr;
        }
        nvinfer1::PluginTensorDesc const& desc = inOut[pos].desc;
        return desc.format == nvinfer1::TensorFormat::kLINEAR ? &desc : nullptr;
    }

    //! "" when a kernel launch succeeded, else "<name>: enqueue failed: <CUDA error>".
    std::string launched(cudaError_t status) const
    {
        return status == cudaSuccess ? std::string()
                                     : std::string(Derived::kName) + ": enqueue failed: " + cudaGetErrorString(status);
    }

    Attributes mAttributes;
    nvinfer1::IErrorRecorder* mRecorder{nullptr};

private:
    IntFields mFields;
};

template <typename Plugin>
class FrameFusionPluginCreatorBase : public PluginIdentity<nvinfer1::IPluginCreatorV3One, Plugin>
{
public:
    FrameFusionPluginCreatorBase()
        : mFields(attributeNames(Plugin::kFields))
    {
    }
    ~FrameFusionPluginCreatorBase() override = default;

    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override
    {
        return mFields.names();
    }

    //! Reads the attributes in kFields order (the first problem is reported), validates them, creates.
    nvinfer1::IPluginV3* createPlugin(char const* /*name*/, nvinfer1::PluginFieldCollection const* fc,
        nvinfer1::TensorRTPhase /*phase*/) noexcept override
    {
        try
        {
            typename Plugin::Attributes attributes;
            std::string error;
            for (auto const& field : Plugin::kFields)
            {
                error = readIntField(fc, Plugin::kName, field.name, attributes.*field.member);
                if (!error.empty())
                {
                    break;
                }
            }
            if (error.empty())
            {
                error = Plugin::validateAttributes(attributes);
            }
            if (!error.empty())
            {
                reportError(nullptr, error);
                return nullptr;
            }
            return new Plugin(attributes);
        }
        catch (...)
        {
            reportError(nullptr, std::string(Plugin::kName) + ": createPlugin failed");
            return nullptr;
        }
    }

private:
    IntFields mFields;
};

} // namespace plugin
} // namespace ffexport
