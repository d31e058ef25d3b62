#include "frameFusionMergePlugin.h"

#include "frameFusionMergeKernel.h"

using namespace nvinfer1;

namespace ffexport
{
namespace plugin
{

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
    return guarded("configurePlugin",
        [&]() -> std::string
        {
            std::string error = arity(nbInputs, nbOutputs, true);
            if (!error.empty())
            {
                return error;
            }
            error = check(in[0].desc.dims, in[0].desc.type);
            if (error.empty() && (in[1].desc.dims.nbDims != 1 || in[1].desc.type != DataType::kINT64))
            {
                error = std::string(kName) + ": patch_ids must be a 1-D int64 tensor";
            }
            if (error.empty() && in[1].desc.dims.d[0] != in[0].desc.dims.d[0] && in[1].desc.dims.d[0] != -1
                && in[0].desc.dims.d[0] != -1)
            {
                error = std::string(kName) + ": patch_ids and visual disagree on n";
            }
            return error;
        });
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
    return guarded("getOutputShapes",
        [&]() -> std::string
        {
            if (nbInputs != kInputs || nbOutputs != kOutputs || inputs[0].nbDims != 2 || inputs[1].nbDims != 1)
            {
                return std::string(kName) + ": expects visual [n, D] and patch_ids [n]";
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
                return error;
            }
            // static buckets: n is a constant, so n - M is too
            IDimensionExpr const* survivors
                = exprBuilder.operation(DimensionOperation::kSUB, *n, *exprBuilder.constant(mAttributes.remove));
            outputs[0].nbDims = 1;
            outputs[0].d[0] = survivors;
            outputs[1].nbDims = 2;
            outputs[1].d[0] = survivors;
            outputs[1].d[1] = d;
            return {};
        });
}

bool FrameFusionMergePlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    PluginTensorDesc const* desc = linearTensor(pos, inOut, nbInputs, nbOutputs);
    if (desc == nullptr)
    {
        return false;
    }
    switch (pos)
    {
    case 0: return toValueType(desc->type) >= 0;
    case 1: return desc->type == DataType::kINT64;
    case 2: return desc->type == DataType::kINT64;
    default: return desc->type == inOut[0].desc.type;
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

int32_t FrameFusionMergePlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    return guarded("enqueue",
        [&]()
        {
            Dims const& visual = inputDesc[0].dims;
            int64_t const n = visual.d[0];
            size_t const bytes = frameFusionMergeWorkspaceSize(n, mAttributes.patchesPerFrame);
            return launched(launchFrameFusionMerge(inputs[0], toValueType(inputDesc[0].type), n, visual.d[1],
                static_cast<int64_t const*>(inputs[1]), mAttributes.remove, mAttributes.patchesPerFrame,
                mAttributes.maxRun, static_cast<int64_t*>(outputs[0]), outputs[1], workspace, bytes, stream));
        });
}

std::string FrameFusionMergePlugin::validateAttributes(MergeAttributes const& attributes)
{
    return validateMergeAttributes(attributes.remove, attributes.patchesPerFrame, attributes.maxRun);
}

} // namespace plugin
} // namespace ffexport
