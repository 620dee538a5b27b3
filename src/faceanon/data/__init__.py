"""Small statistical models shipped with faceanon (see ``README.txt`` beside this file)."""
