"""What the chapters use: Colab install and glue (`colab`), the figures' one style (`plots`), the ε explorer
(`widgets`). The chapters' setup cell takes `colab_install` and `glue` from here."""

from .colab import BOOTSTRAP, REPO_URL, colab_install, glue, install_source, on_colab

__all__ = ["BOOTSTRAP", "REPO_URL", "colab_install", "glue", "install_source", "on_colab"]
