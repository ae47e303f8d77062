"""fedmedlib: privacy-preserving federated learning for medical imaging, reproduced honestly.

References:
    Fares & Saad, "Towards Privacy-Preserving Medical Imaging: Federated Learning with Differential
    Privacy and Secure Aggregation Using a Modified ResNet Architecture", arXiv 2412.00687 (2024).
    Yang et al., "MedMNIST v2", Scientific Data 10:41 (2023).
"""

__version__ = "0.1.0"
# The repository's address, written here once: the Colab install, the chapters' badges, _config.yml, the README
# and pyproject.toml's [project.urls] copy it, and tests/test_repo_url.py checks that they agree.
REPO_URL = "https://github.com/fedmedlib/fedmedlib"
