/* no_symbol.c: a test shared object that exports no celeriac_service symbol; the loader must
 * refuse it and name the missing symbol. */
int no_symbol_here(void);

int no_symbol_here(void)
{
    return 42;
}
