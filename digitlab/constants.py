"""Constants shared by training, serving and clients: each defined once, here."""

NUM_DIGITS = 10  # palindrome alphabet 0..9
NUM_CLASSES = 10  # palindrome digits and MNIST classes alike
DIGIT_CENTRE = (NUM_DIGITS - 1) / 2  # 4.5: scalar digit inputs are fed as (d - 4.5) / 4.5 in [-1, 1]

IMAGE_SIZE = 28  # MNIST is 1 x 28 x 28
IMAGE_PIXELS = IMAGE_SIZE * IMAGE_SIZE
LATENT_DIM = 100
TRUNCATION_OFF = 1.0  # the latent truncation psi that changes nothing: requests' default
MAX_SAMPLES = 64  # images per sample request at most: the ceiling a model config may lower
MAX_STEPS = 64  # frames per interpolation at most: likewise
MAX_SEED = 2**31 - 1  # seeds and latent indices are non-negative 31-bit ints: safe in every JSON client

# MNIST pixels in [0, 1] are mapped to the generator's tanh range [-1, 1]: x' = (x - 0.5) / 0.5.
MNIST_MEAN = 0.5
MNIST_STD = 0.5
