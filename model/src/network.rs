//! The models workers train and the PS evaluates, and the bridge between burn modules and the
//! flat f32 vectors that travel on the wire: parameters in, gradients out, in one fixed order
//! (the `#[derive(Module)]` field order) described by a layout whose hash both ends compare.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Gradients, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;

/// What to build: the DracoJob's `spec.model`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "architecture")]
pub enum Architecture {
    /// Fully connected layers with ReLU between them.
    Mlp { hidden: Vec<usize> },
    /// LeNet-5 style: two 5x5 convolutions with max pooling, then three dense layers.
    Lenet,
}

#[derive(Module, Debug)]
pub struct Mlp {
    layers: Vec<Linear>,
}

#[derive(Module, Debug)]
pub struct LeNet {
    conv1: Conv2d,
    conv2: Conv2d,
    pool: MaxPool2d,
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
}

// The variants differ in size, but a network exists once per process: boxing buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Network {
    Mlp(Mlp),
    LeNet(LeNet),
}

impl Network {
    /// Builds the network for inputs of `shape` ([c, h, w]) and `classes` outputs, with
    /// parameters drawn from `device`'s RNG (seed it for reproducible initial parameters).
    pub fn new(architecture: &Architecture, shape: [usize; 3], classes: usize, device: &Device) -> Network {
        match architecture {
            Architecture::Mlp { hidden } => {
                let mut widths = vec![shape.iter().product()];
                widths.extend(hidden);
                widths.push(classes);
                let layers = widths.windows(2).map(|w| LinearConfig::new(w[0], w[1]).init(device)).collect();
                Network::Mlp(Mlp { layers })
            }
            Architecture::Lenet => {
                // Two valid 5x5 convolutions, each followed by 2x2 max pooling.
                let side = |x: usize| ((x.saturating_sub(4)) / 2).saturating_sub(4) / 2;
                let flat = 16 * side(shape[1]) * side(shape[2]);
                Network::LeNet(LeNet {
                    conv1: Conv2dConfig::new([shape[0], 6], [5, 5]).init(device),
                    conv2: Conv2dConfig::new([6, 16], [5, 5]).init(device),
                    pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
                    fc1: LinearConfig::new(flat.max(1), 120).init(device),
                    fc2: LinearConfig::new(120, 84).init(device),
                    fc3: LinearConfig::new(84, classes).init(device),
                })
            }
        }
    }

    /// Logits for a batch `[n, c, h, w]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Network::Mlp(mlp) => {
                let mut x: Tensor<2> = images.flatten(1, 3);
                let last = mlp.layers.len() - 1;
                for (i, layer) in mlp.layers.iter().enumerate() {
                    x = layer.forward(x);
                    if i < last {
                        x = relu(x);
                    }
                }
                x
            }
            Network::LeNet(net) => {
                let x = net.pool.forward(relu(net.conv1.forward(images)));
                let x = net.pool.forward(relu(net.conv2.forward(x)));
                let x: Tensor<2> = x.flatten(1, 3);
                net.fc3.forward(relu(net.fc2.forward(relu(net.fc1.forward(x)))))
            }
        }
    }

    /// The flat parameter vector.
    pub fn parameters(&self) -> Vec<f32> {
        let mut flat = Flatten { grads: None, out: Vec::new() };
        self.visit(&mut flat);
        flat.out
    }

    /// Replaces every parameter with the next slice of `flat` (same order as `parameters`).
    pub fn load(self, flat: &[f32]) -> Network {
        assert_eq!(flat.len(), self.num_params(), "flat parameter vector of the model's size");
        self.map(&mut Load { flat, pos: 0 })
    }

    /// Names, shapes and offsets of the parameters, in wire order.
    pub fn layout(&self) -> Layout {
        let mut layout = Layout::default();
        self.visit(&mut LayoutVisitor { path: Vec::new(), layout: &mut layout });
        layout
    }
}

/// Where each parameter tensor sits in the flat vector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    pub entries: Vec<(String, Vec<usize>, usize)>,
}

impl Layout {
    pub fn len(&self) -> usize {
        self.entries.last().map_or(0, |(_, shape, off)| off + shape.iter().product::<usize>())
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// FNV-1a over "path:shape@offset" lines: PS and workers refuse to pair different models.
    pub fn digest(&self) -> u64 {
        let text: String = self.entries.iter().map(|(p, s, o)| format!("{p}:{s:?}@{o}\n")).collect();
        draco_core::digest::fnv1a(text.bytes())
    }
}

struct Flatten<'g> {
    grads: Option<&'g Gradients>,
    out: Vec<f32>,
}

impl ModuleVisitor for Flatten<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        let tensor = match self.grads {
            // A parameter that did not take part in the loss has a zero gradient.
            Some(grads) => value.grad(grads).unwrap_or_else(|| value.zeros_like()),
            None => value,
        };
        let data = tensor.into_data();
        self.out.extend_from_slice(data.as_slice::<f32>().expect("float parameters are f32"));
    }
}

struct Load<'a> {
    flat: &'a [f32],
    pos: usize,
}

impl ModuleMapper for Load<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let shape = param.lazy_shape();
        let n = shape.num_elements();
        let slice = &self.flat[self.pos..self.pos + n];
        self.pos += n;
        // `Param::map` keeps the parameter's id, so gradients stay addressable by it.
        param.map(|tensor| {
            let device = tensor.device();
            let keep_grad = tensor.is_require_grad();
            Tensor::from_data(TensorData::new(slice.to_vec(), shape), &device).set_require_grad(keep_grad)
        })
    }
}

struct LayoutVisitor<'l> {
    path: Vec<String>,
    layout: &'l mut Layout,
}

impl ModuleVisitor for LayoutVisitor<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let shape = param.lazy_shape().dims::<D>().to_vec();
        let offset = self.layout.len();
        self.layout.entries.push((self.path.join("."), shape, offset));
    }
}

/// Computes partition gradients for a worker: owns an autodiff copy of the network.
pub struct GradientComputer {
    network: Option<Network>,
    device: Device,
}

/// Loss and accuracy of a parameter vector on a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Evaluation {
    pub loss: f32,
    pub accuracy: f32,
}

fn batch_tensors(data: &Dataset, samples: &[usize], flip_labels: bool, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let [c, h, w] = data.shape;
    let mut pixels = Vec::with_capacity(samples.len() * c * h * w);
    samples.iter().for_each(|&i| pixels.extend_from_slice(data.image(i)));
    let top = data.classes.saturating_sub(1) as i64;
    let labels: Vec<i64> =
        samples.iter().map(|&i| i64::from(data.labels[i])).map(|y| if flip_labels { top - y } else { y }).collect();
    (
        Tensor::from_data(TensorData::new(pixels, [samples.len(), c, h, w]), device),
        Tensor::from_data(TensorData::new(labels, [samples.len()]), device),
    )
}

impl GradientComputer {
    pub fn new(architecture: &Architecture, shape: [usize; 3], classes: usize) -> Self {
        #[allow(deprecated)] // ndarray is the CPU backend verified deterministic here (toolbox.md)
        let device = Device::ndarray().autodiff();
        let network = Network::new(architecture, shape, classes, &device);
        GradientComputer { network: Some(network), device }
    }

    pub fn num_params(&self) -> usize {
        self.network.as_ref().map_or(0, |n| n.num_params())
    }

    pub fn layout(&self) -> Layout {
        self.network.as_ref().map(Network::layout).unwrap_or_default()
    }

    /// The gradient at `params` of (sum of the cross-entropy losses of `samples`) / `batch_size`,
    /// so that the partition gradients of one batch add up to the gradient of its mean loss.
    /// Returns the flat gradient and that partial loss. `flip_labels` trains on label
    /// `classes - 1 - y` instead of y (the label-flipping drill).
    pub fn gradient(
        &mut self,
        params: &[f32],
        data: &Dataset,
        samples: &[usize],
        batch_size: usize,
        flip_labels: bool,
    ) -> (Vec<f32>, f32) {
        let network = self.network.take().expect("network present").load(params);
        let (images, labels) = batch_tensors(data, samples, flip_labels, &self.device);
        let loss = CrossEntropyLossConfig::new().init(&self.device).forward(network.forward(images), labels);
        let loss = loss.mul_scalar(samples.len() as f32 / batch_size as f32);
        let grads = loss.backward();
        let mut flat = Flatten { grads: Some(&grads), out: Vec::with_capacity(params.len()) };
        network.visit(&mut flat);
        let value = loss.into_scalar::<f32>();
        self.network = Some(network);
        (flat.out, value)
    }
}

/// Evaluates parameter vectors (no autodiff): used by the PS every few steps.
pub struct Evaluator {
    network: Option<Network>,
    device: Device,
}

impl Evaluator {
    pub fn new(architecture: &Architecture, shape: [usize; 3], classes: usize) -> Self {
        #[allow(deprecated)]
        let device = Device::ndarray();
        Evaluator { network: Some(Network::new(architecture, shape, classes, &device)), device }
    }

    pub fn evaluate(&mut self, params: &[f32], data: &Dataset) -> Evaluation {
        let network = self.network.take().expect("network present").load(params);
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        let indices: Vec<usize> = (0..data.len()).collect();
        for chunk in indices.chunks(1000) {
            let (images, labels) = batch_tensors(data, chunk, false, &self.device);
            let logits = network.forward(images);
            let loss = CrossEntropyLossConfig::new().init(&self.device).forward(logits.clone(), labels.clone());
            loss_sum += f64::from(loss.into_scalar::<f32>()) * chunk.len() as f64;
            let predicted = logits.argmax(1).flatten::<1>(0, 1);
            correct += predicted.equal(labels).int().sum().into_scalar::<i64>() as usize;
        }
        self.network = Some(network);
        let n = data.len().max(1);
        Evaluation { loss: (loss_sum / n as f64) as f32, accuracy: correct as f32 / n as f32 }
    }
}

/// Initial parameters for a job: uniform in +-1/sqrt(fan_in) (the usual default for dense
/// and convolution layers), drawn from SplitMix64 seeded by the job seed. Independent of
/// burn's global RNG, so every process (and every test thread) gets the same vector.
pub fn initial_parameters(
    architecture: &Architecture,
    shape: [usize; 3],
    classes: usize,
    seed: u64,
) -> (Vec<f32>, Layout) {
    #[allow(deprecated)]
    let device = Device::ndarray();
    let layout = Network::new(architecture, shape, classes, &device).layout();
    let mut rng = draco_core::assignment::SplitMix64(seed ^ 0x6A09_E667_F3BC_C908);
    let mut next_unit = move || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
    let mut params = Vec::with_capacity(layout.len());
    let mut fan_in = 1usize;
    for (_, dims, _) in &layout.entries {
        // Linear weights are [d_in, d_out]; conv weights [out, in, kh, kw]; a bias follows its
        // weight and shares its fan-in.
        fan_in = match dims.len() {
            2 => dims[0],
            4 => dims[1] * dims[2] * dims[3],
            _ => fan_in,
        };
        let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
        let count: usize = dims.iter().product();
        params.extend((0..count).map(|_| (next_unit() * bound) as f32));
    }
    (params, layout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mlp() -> Architecture {
        Architecture::Mlp { hidden: vec![16] }
    }

    #[test]
    fn flat_parameters_round_trip_and_layout_matches() {
        let (params, layout) = initial_parameters(&mlp(), [1, 4, 4], 3, 42);
        assert_eq!(params.len(), 16 * 16 + 16 + 16 * 3 + 3);
        assert_eq!(layout.len(), params.len());
        let (again, layout2) = initial_parameters(&mlp(), [1, 4, 4], 3, 42);
        assert_eq!(params, again, "same seed, same initial parameters");
        assert_eq!(layout.digest(), layout2.digest());
        let (_, other) = initial_parameters(&Architecture::Mlp { hidden: vec![17] }, [1, 4, 4], 3, 42);
        assert_ne!(layout.digest(), other.digest());
        let mut computer = GradientComputer::new(&mlp(), [1, 4, 4], 3);
        assert_eq!(computer.layout().digest(), layout.digest(), "autodiff copy has the same layout");
        let data = Dataset::synthetic(30, [1, 4, 4], 3, 1);
        let (g, loss) = computer.gradient(&params, &data, &[0, 1, 2], 6, false);
        assert_eq!(g.len(), params.len());
        assert!(loss.is_finite() && loss > 0.0);
    }

    #[test]
    fn gradients_are_bit_identical_run_to_run_and_partitions_add_up() {
        let (params, _) = initial_parameters(&mlp(), [1, 4, 4], 3, 5);
        let data = Dataset::synthetic(40, [1, 4, 4], 3, 2);
        let mut a = GradientComputer::new(&mlp(), [1, 4, 4], 3);
        let mut b = GradientComputer::new(&mlp(), [1, 4, 4], 3);
        let samples: Vec<usize> = (0..8).collect();
        let (ga, _) = a.gradient(&params, &data, &samples, 8, false);
        let (gb, _) = b.gradient(&params, &data, &samples, 8, false);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&ga), bits(&gb), "repetition voting needs bit-identical replicas");
        let (g1, _) = a.gradient(&params, &data, &samples[..4], 8, false);
        let (g2, _) = a.gradient(&params, &data, &samples[4..], 8, false);
        for ((x, y), z) in g1.iter().zip(&g2).zip(&ga) {
            assert!((x + y - z).abs() <= 1e-5 * (1.0 + z.abs()), "partition gradients sum to the batch gradient");
        }
    }

    #[test]
    fn sgd_on_flat_vectors_learns_and_lenet_runs() {
        let data = Dataset::synthetic(200, [1, 28, 28], 10, 3);
        for arch in [mlp(), Architecture::Lenet] {
            let (mut params, _) = initial_parameters(&arch, [1, 28, 28], 10, 9);
            let mut computer = GradientComputer::new(&arch, [1, 28, 28], 10);
            let mut evaluator = Evaluator::new(&arch, [1, 28, 28], 10);
            let before = evaluator.evaluate(&params, &data);
            for step in 0..30 {
                let samples: Vec<usize> = (0..20).map(|k| (step * 20 + k) % 200).collect();
                let (g, _) = computer.gradient(&params, &data, &samples, 20, false);
                params.iter_mut().zip(&g).for_each(|(p, g)| *p -= 0.1 * g);
            }
            let after = evaluator.evaluate(&params, &data);
            assert!(after.loss < before.loss, "{arch:?}: {before:?} -> {after:?}");
            if arch == mlp() {
                assert!(after.accuracy > 0.5, "{arch:?}: {after:?}");
            }
        }
    }
}
