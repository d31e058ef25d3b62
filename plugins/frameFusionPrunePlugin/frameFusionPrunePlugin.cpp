#include "frameFusionPrunePlugin.h"

#include "frameFusionPruneKernel.h"

using namespace nvinfer1;

namespace ffexport
{
namespace plugin
{
namespace
{
constexpr int32_t kInputs = 1;  // importance [n]
constexpr int32_t kOutputs = 1; // kept [K]

} // namespace

FrameFusionPrunePlugin::FrameFusionPrunePlugin(int64_t keep)
    : mKeep(keep)
{
}

IPluginCapability* FrameFusionPrunePlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

IPluginV3* FrameFusionPrunePlugin::clone() noexcept
{
    try
    {
        auto* copy = new FrameFusionPrunePlugin(mKeep);
        copy->mRecorder = mRecorder;
        return copy;
    }
    catch (...)
    {
        reportError(mRecorder, std::string(kName) + ": out of memory in clone");
        return nullptr;
    }
}

char const* FrameFusionPrunePlugin::getPluginName() const noexcept
{
    return kName;
}

char const* FrameFusionPrunePlugin::getPluginVersion() const noexcept
{
    return kVersion;
}

char const* FrameFusionPrunePlugin::getPluginNamespace() const noexcept
{
    return kNamespace;
}

int32_t FrameFusionPrunePlugin::getNbOutputs() const noexcept
{
    return kOutputs;
}

std::string FrameFusionPrunePlugin::check(Dims const& importance, DataType type) const
{
    if (importance.nbDims != 1)
    {
        return std::string(kName) + ": importance must be 1-D [n] (got " + std::to_string(importance.nbDims)
            + " dims)";
    }
    return validatePrune(importance.d[0], toValueType(type), mKeep);
}

int32_t FrameFusionPrunePlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    try
    {
        if (nbInputs != kInputs || nbOutputs != kOutputs)
        {
            reportError(mRecorder, std::string(kName) + ": takes 1 input (importance) and gives 1 output");
            return -1;
        }
        std::string const error = check(in[0].desc.dims, in[0].desc.type);
        if (!error.empty())
        {
            reportError(mRecorder, error);
            return -1;
        }
        return 0;
    }
    catch (...)
    {
        reportError(mRecorder, std::string(kName) + ": configurePlugin failed");
        return -1;
    }
}

int32_t FrameFusionPrunePlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbInputs != kInputs || nbOutputs != kOutputs || inputTypes[0] != DataType::kFLOAT)
    {
        reportError(mRecorder, std::string(kName) + ": importance must be float32");
        return -1;
    }
    outputTypes[0] = DataType::kINT64;
    return 0;
}

int32_t FrameFusionPrunePlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
    DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs,
    IExprBuilder& exprBuilder) noexcept
{
    try
    {
        if (nbInputs != kInputs || nbOutputs != kOutputs || inputs[0].nbDims != 1)
        {
            reportError(mRecorder, std::string(kName) + ": expects importance [n]");
            return -1;
        }
        IDimensionExpr const* n = inputs[0].d[0];
        std::string const error = validatePrune(n->isConstant() ? n->getConstantValue() : kUnknownDim, kValueFloat32, mKeep);
        if (!error.empty())
        {
            reportError(mRecorder, error);
            return -1;
        }
        outputs[0].nbDims = 1;
        outputs[0].d[0] = exprBuilder.constant(mKeep);
        return 0;
    }
    catch (...)
    {
        reportError(mRecorder, std::string(kName) + ": getOutputShapes failed");
        return -1;
    }
}

bool FrameFusionPrunePlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbInputs != kInputs || nbOutputs != kOutputs || pos < 0 || pos >= kInputs + kOutputs)
    {
        return false;
    }
    PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != TensorFormat::kLINEAR)
    {
        return false;
    }
    return pos == 0 ? desc.type == DataType::kFLOAT : desc.type == DataType::kINT64;
}

size_t FrameFusionPrunePlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    if (nbInputs != kInputs || inputs[0].max.nbDims != 1 || inputs[0].max.d[0] < 1)
    {
        return 0;
    }
    return frameFusionPruneWorkspaceSize(inputs[0].max.d[0]);
}

int32_t FrameFusionPrunePlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    try
    {
        if (nbInputs != kInputs || nbOutputs != kOutputs)
        {
            reportError(mRecorder, std::string(kName) + ": takes 1 input and gives 1 output");
            return -1;
        }
        std::string const error = check(in[0].dims, in[0].type);
        if (!error.empty())
        {
            reportError(mRecorder, error);
            return -1;
        }
        return 0;
    }
    catch (...)
    {
        reportError(mRecorder, std::string(kName) + ": onShapeChange failed");
        return -1;
    }
}

int32_t FrameFusionPrunePlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    try
    {
        int64_t const n = inputDesc[0].dims.d[0];
        cudaError_t const status = launchFrameFusionPrune(static_cast<float const*>(inputs[0]), n, mKeep,
            static_cast<int64_t*>(outputs[0]), workspace, frameFusionPruneWorkspaceSize(n), stream);
        if (status != cudaSuccess)
        {
            reportError(mRecorder, std::string(kName) + ": enqueue failed: " + cudaGetErrorString(status));
            return -1;
        }
        return 0;
    }
    catch (...)
    {
        reportError(mRecorder, std::string(kName) + ": enqueue failed");
        return -1;
    }
}

IPluginV3* FrameFusionPrunePlugin::attachToContext(IPluginResourceContext* context) noexcept
{
    auto* copy = static_cast<FrameFusionPrunePlugin*>(clone());
    if (copy != nullptr && context != nullptr)
    {
        copy->mRecorder = context->getErrorRecorder();
    }
    return copy;
}

PluginFieldCollection const* FrameFusionPrunePlugin::getFieldsToSerialize() noexcept
{
    try
    {
        return mFields.with({mKeep});
    }
    catch (...)
    {
        reportError(mRecorder, std::string(kName) + ": getFieldsToSerialize failed");
        return nullptr;
    }
}

char const* FrameFusionPrunePluginCreator::getPluginName() const noexcept
{
    return FrameFusionPrunePlugin::kName;
}

char const* FrameFusionPrunePluginCreator::getPluginVersion() const noexcept
{
    return kVersion;
}

char const* FrameFusionPrunePluginCreator::getPluginNamespace() const noexcept
{
    return kNamespace;
}

PluginFieldCollection const* FrameFusionPrunePluginCreator::getFieldNames() noexcept
{
    return mFields.names();
}

IPluginV3* FrameFusionPrunePluginCreator::createPlugin(
    char const* /*name*/, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    try
    {
        int64_t keep = 0;
        std::string error = readIntField(fc, FrameFusionPrunePlugin::kName, "keep", keep);
        if (error.empty())
        {
            error = validatePruneAttributes(keep);
        }
        if (!error.empty())
        {
            reportError(nullptr, error);
            return nullptr;
        }
        return new FrameFusionPrunePlugin(keep);
    }
    catch (...)
    {
        reportError(nullptr, std::string(FrameFusionPrunePlugin::kName) + ": createPlugin failed");
        return nullptr;
    }
}

} // namespace plugin
} // namespace ffexport
