#include "frameFusionMergePlugin.h"

#include "frameFusionMergeKernel.h"


using namespace nvinfer1;

namespace ffexport
{
namespace plugin
{
namespace
{
constexpr int32_t kInputs = 2;  // visual [n, D], patch_ids [n]
constexpr int32_t kOutputs = 2; // kept [n - M], values [n - M, D]
} // namespace

FrameFusionMergePlugin::FrameFusionMergePlugin(MergeAttributes const& attributes)
    : mAttributes(attributes)
{
}

IPluginCapability* FrameFusionMergePlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

IPluginV3* FrameFusionMergePlugin::clone() noexcept
{
    try
    {
        auto* copy = new FrameFusionMergePlugin(mAttributes);
        copy->mRecorder = mRecorder;
        return copy;
    }
    catch (...)
    {
        reportError(mRecorder, std::string(kName) + ": out of memory in clone");
        return nullptr;
    }
}

char const* FrameFusionMergePlugin::getPluginName() const noexcept
{
    return kName;
}

char const* FrameFusionMergePlugin::getPluginVersion() const noexcept
{
    return kVersion;
}

char const* FrameFusionMergePlugin::getPluginNamespace() const noexcept
{
    return kNamespace;
}

int32_t FrameFusionMergePlugin::getNbOutputs() const noexcept
{
    return kOutputs;
}

std::string FrameFusionMergePlugin::check(Dims const& visual, DataType type) const
{
    if (visual.nbDims != 2)
    {
        return std::string(kName) + ": visual must be 2-D [n, D] (got " + std::to_string(visual.nbDims) + " dims)";
    }
    return validateMerge(visual.d[0], visual.d[1], toValueType(type), mAttributes.remove,
        mAttributes.patchesPerFrame, mAttributes.maxRun);
}

int32_t FrameFusionMergePlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    try
    {
        if (nbInputs != kInputs || nbOutputs != kOutputs)
        {
            reportError(mRecorder, std::string(kName) + ": takes 2 inputs (visual, patch_ids) and gives 2 outputs");
            return -1;
        }
        std::string error = check(in[0].desc.dims, in[0].desc.type);
        if (error.empty() && (in[1].desc.dims.nbDims != 1 || in[1].desc.type != DataType::kINT64))
        {
            error = std::string(kName) + ": patch_ids must be a 1-D int64 tensor";
        }
        if (error.empty() && in[1].desc.dims.d[0] != in[0].desc.dims.d[0] && in[1].desc.dims.d[0] != -1
            && in[0].desc.dims.d[0] != -1)
        {
            error = std::string(kName) + ": patch_ids and visual disagree on n";
        }
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

int32_t FrameFusionMergePlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbInputs != kInputs || nbOutputs != kOutputs || toValueType(inputTypes[0]) < 0)
    {
        reportError(mRecorder, std::string(kName) + ": visual must be float32, float16 or bfloat16");
        return -1;
    }
    outputTypes[0] = DataType::kINT64;
    outputTypes[1] = inputTypes[0];
    return 0;
}

int32_t FrameFusionMergePlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
    DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs,
    IExprBuilder& exprBuilder) noexcept
{
    try
    {
        if (nbInputs != kInputs || nbOutputs != kOutputs || inputs[0].nbDims != 2 || inputs[1].nbDims != 1)
        {
            reportError(mRecorder, std::string(kName) + ": expects visual [n, D] and patch_ids [n]");
            return -1;
        }
        IDimensionExpr const* n = inputs[0].d[0];
        IDimensionExpr const* d = inputs[0].d[1];
        int64_t const knownN = n->isConstant() ? n->getConstantValue() : kUnknownDim;
        int64_t const knownD = d->isConstant() ? d->getConstantValue() : kUnknownDim;
        // the dtype is checked in supportsFormatCombination / configurePlugin (not known here)
        std::string const error = validateMerge(
            knownN, knownD, kValueFloat32, mAttributes.remove, mAttributes.patchesPerFrame, mAttributes.maxRun);
        if (!error.empty())
        {
            reportError(mRecorder, error);
            return -1;
        }
        // static buckets: n is a constant, so n - M is too
        IDimensionExpr const* survivors
            = exprBuilder.operation(DimensionOperation::kSUB, *n, *exprBuilder.constant(mAttributes.remove));
        outputs[0].nbDims = 1;
        outputs[0].d[0] = survivors;
        outputs[1].nbDims = 2;
        outputs[1].d[0] = survivors;
        outputs[1].d[1] = d;
        return 0;
    }
    catch (...)
    {
        reportError(mRecorder, std::string(kName) + ": getOutputShapes failed");
        return -1;
    }
}

bool FrameFusionMergePlugin::supportsFormatCombination(
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
    switch (pos)
    {
    case 0: return toValueType(desc.type) >= 0;
    case 1: return desc.type == DataType::kINT64;
    case 2: return desc.type == DataType::kINT64;
    default: return desc.type == inOut[0].desc.type;
    }
}

size_t FrameFusionMergePlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    if (nbInputs != kInputs || inputs[0].max.nbDims != 2 || inputs[0].max.d[0] < 1)
    {
        return 0;
    }
    return frameFusionMergeWorkspaceSize(inputs[0].max.d[0], mAttributes.patchesPerFrame);
}

int32_t FrameFusionMergePlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    try
    {
        if (nbInputs != kInputs || nbOutputs != kOutputs)
        {
            reportError(mRecorder, std::string(kName) + ": takes 2 inputs and gives 2 outputs");
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

int32_t FrameFusionMergePlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    try
    {
        Dims const& visual = inputDesc[0].dims;
        int64_t const n = visual.d[0];
        size_t const bytes = frameFusionMergeWorkspaceSize(n, mAttributes.patchesPerFrame);
        cudaError_t const status = launchFrameFusionMerge(inputs[0], toValueType(inputDesc[0].type), n, visual.d[1],
            static_cast<int64_t const*>(inputs[1]), mAttributes.remove, mAttributes.patchesPerFrame,
            mAttributes.maxRun, static_cast<int64_t*>(outputs[0]), outputs[1], workspace, bytes, stream);
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

IPluginV3* FrameFusionMergePlugin::attachToContext(IPluginResourceContext* context) noexcept
{
    auto* copy = static_cast<FrameFusionMergePlugin*>(clone());
    if (copy != nullptr && context != nullptr)
    {
        copy->mRecorder = context->getErrorRecorder();
    }
    return copy;
}

PluginFieldCollection const* FrameFusionMergePlugin::getFieldsToSerialize() noexcept
{
    try
    {
        return mFields.with({mAttributes.remove, mAttributes.patchesPerFrame, mAttributes.maxRun});
    }
    catch (...)
    {
        reportError(mRecorder, std::string(kName) + ": getFieldsToSerialize failed");
        return nullptr;
    }
}

char const* FrameFusionMergePluginCreator::getPluginName() const noexcept
{
    return FrameFusionMergePlugin::kName;
}

char const* FrameFusionMergePluginCreator::getPluginVersion() const noexcept
{
    return kVersion;
}

char const* FrameFusionMergePluginCreator::getPluginNamespace() const noexcept
{
    return kNamespace;
}

PluginFieldCollection const* FrameFusionMergePluginCreator::getFieldNames() noexcept
{
    return mFields.names();
}

IPluginV3* FrameFusionMergePluginCreator::createPlugin(
    char const* /*name*/, PluginFieldCollection const* fc, TensorRTPhase /*phase*/) noexcept
{
    try
    {
        MergeAttributes attributes;
        char const* pluginName = FrameFusionMergePlugin::kName;
        std::string error = readIntField(fc, pluginName, "remove", attributes.remove);
        if (error.empty())
        {
            error = readIntField(fc, pluginName, "patches_per_frame", attributes.patchesPerFrame);
        }
        if (error.empty())
        {
            error = readIntField(fc, pluginName, "max_run", attributes.maxRun);
        }
        if (error.empty())
        {
            error = validateMergeAttributes(attributes.remove, attributes.patchesPerFrame, attributes.maxRun);
        }
        if (!error.empty())
        {
            reportError(nullptr, error);
            return nullptr;
        }
        return new FrameFusionMergePlugin(attributes);
    }
    catch (...)
    {
        reportError(nullptr, std::string(FrameFusionMergePlugin::kName) + ": createPlugin failed");
        return nullptr;
    }
}

} // namespace plugin
} // namespace ffexport
